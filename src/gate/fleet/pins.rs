//! Trust-on-first-use agreed by the fleet: the first replica to pin the upstream's tools
//! writes its pins to `PREFIX:pins` (set only if absent, so there is one first); every other
//! replica adopts those, at start and while it has pinned nothing, or in place of its own
//! first-use pins. A replica shown another listing than the first (an upstream that serves
//! each replica differently, a rug pull between two first uses) then sees a change, not a
//! new truth.
//!
//! Only first-use pins take part: pins read from a file (the operator's, or an earlier first
//! use's) are never proposed or replaced, nor are pins reloaded from the file while a proposal
//! was out, and an empty first listing is not proposed. When Redis does not answer, the
//! replica keeps its own pins and asks again every second until it does.

use std::sync::{Arc, LazyLock};

use tracing::error;

use super::{Fleet, RECONNECT_EVERY};
use crate::gate::tools::{PinBoard, PinFile, Registry};

/// KEYS: the pins. ARGV: this replica's pins ('' for none). Returns the fleet's pins, or nil.
static AGREE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'NX') end
return redis.call('GET', KEYS[1])
"#,
    )
});

/// The fleet as a tool registry's [`PinBoard`].
#[derive(Debug)]
pub(in crate::gate) struct FleetPins(pub(in crate::gate) Arc<Fleet>);

impl PinBoard for FleetPins {
    fn propose(&self, registry: Arc<Registry>, pins: Option<PinFile>) {
        let fleet = self.0.clone();
        tokio::spawn(async move {
            let ours = pins.as_ref().map(PinFile::to_json).unwrap_or_default();
            let key = fleet.key("pins");
            loop {
                // Nothing of ours to propose, and our first use has since pinned: that
                // pinning proposes for itself.
                if pins.is_none() && !registry.is_first_use() {
                    return;
                }
                let mut invocation = AGREE.prepare_invoke();
                invocation.key(&key).arg(&ours);
                match fleet.invoke::<Option<String>>("pins", &invocation).await {
                    Some(Some(text)) if text == ours => return,
                    Some(Some(text)) => {
                        match PinFile::parse(&text) {
                            Ok(theirs) => registry.adopt(theirs, pins.as_ref()),
                            Err(e) => error!(key = %key, error = %e,
                                "The fleet's pins in Redis are not a pin file; this replica keeps its own"),
                        }
                        return;
                    }
                    // No pins yet in the fleet: ours were none; look again while we have none.
                    Some(None) if pins.is_none() => {}
                    Some(None) => return,
                    None => {}
                }
                tokio::time::sleep(RECONNECT_EVERY).await;
            }
        });
    }
}
