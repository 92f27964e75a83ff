//! Approvals shared by the fleet: a call held on one replica is listed and decided through
//! any replica's API, CLI or page, once.
//!
//! Each held call is a hash `PREFIX:ap:ID` (the call as approvers see it, its state, its
//! deadline on Redis's clock, the replica holding it) and a member of the sorted set
//! `PREFIX:ap:pending` (scored by deadline). Every step is one Lua script, so that Redis, not a
//! replica, decides what happened first: a decision is taken only while the call is pending,
//! before its deadline, and while its replica is alive, and only once; the holder's own
//! expiry or cancellation closes it the same way, and learns of a decision that got in first.
//! A decision is published on `PREFIX:ap:decided`; the holding replica subscribes and wakes
//! the call. Missed messages (a reconnect) are made up by reading back the state of every
//! call held here once subscribed again, and at the deadline, which asks Redis first.
//!
//! Each replica keeps `PREFIX:replica:NAME` alive (a few seconds' expiry, refreshed every
//! second) and deletes it as it stops: the calls of a replica that stopped or died (SIGKILL)
//! are no longer listed and cannot be approved, since nobody is there to send them. A holder
//! cut off from Redis for a moment is not written off: its calls come back when it does.
//!
//! Whoever can write to the fleet's Redis can approve calls: it is part of the gate's trust
//! base (a password or an ACL user, a private network). The scripts touch keys they compute
//! from the prefix, so this needs one Redis (or a Sentinel-managed primary), not a Cluster.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use tracing::info;

use super::Fleet;
use crate::gate::approval::{
    DecideError, Desk, HeldCall, Later, Ledger, Outcome, Unreachable, Verdict,
};

/// How long a closed call's record stays, so that a late or replayed decision is told what
/// became of it (409) rather than "unknown".
const REMEMBER_MS: u64 = 60 * 60 * 1000;

/// How often a replica says it is alive, and how long the fleet believes it.
const ALIVE_EVERY: Duration = Duration::from_secs(1);
const ALIVE_FOR_MS: u64 = 5_000;

/// Every how many liveness ticks the held calls' states are read back.
const READ_BACK_EVERY: u64 = 5;

/// At most this many held calls are listed (the desks' `max-pending` bound each replica).
const MAX_LISTED: usize = 1_000;

/// The clock every script reads: Redis's, in milliseconds.
/// Numbers are written with `%.0f` (`int`), never as Lua's 14-digit `tostring`.
const NOW: &str = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\nlocal function int(x) return string.format('%.0f', x) end\n";

/// KEYS: record, index, holder. ARGV: call JSON, timeout ms, remember ms, id.
static SHARE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{NOW}{}",
        r#"
local expires = now + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('HSET', KEYS[1], 'call', ARGV[1], 'state', 'pending', 'created_at', int(now),
  'expires_at', int(expires), 'holder', KEYS[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], expires, ARGV[4])
return expires
"#
    ))
});

/// KEYS: index. ARGV: prefix, max. Returns now, then call, created_at, expires_at per
/// pending call whose holder is alive.
static LIST: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{NOW}{}",
        r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local out = {int(now)}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local r = redis.call('HMGET', ARGV[1] .. ':ap:' .. id, 'call', 'state', 'created_at', 'expires_at', 'holder')
  if r[2] == 'pending' and redis.call('EXISTS', r[5]) == 1 then
    table.insert(out, r[1]); table.insert(out, r[3]); table.insert(out, r[4])
  end
end
return out
"#
    ))
});

/// KEYS: record. Returns {} (unknown), or now, state, by, call, created_at, expires_at,
/// whether the holder is alive.
static GET: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{NOW}{}",
        r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'by', 'call', 'created_at', 'expires_at', 'holder')
if not r[1] then return {} end
local alive = r[6] and redis.call('EXISTS', r[6]) or 0
return {int(now), r[1], r[2] or '', r[3], r[4], r[5], tostring(alive)}
"#
    ))
});

/// KEYS: record, index. ARGV: state (`approved`/`denied`), by, reason, channel, message, id.
/// Returns {'ok'}, {'unknown'}, {'gone'} (its holder is not alive: nothing changes, so that
/// a holder cut off for a moment decides it when back), or {'closed', state, by}.
static DECIDE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{NOW}{}",
        r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'expires_at', 'by', 'holder')
if not r[1] then return {'unknown'} end
if r[1] ~= 'pending' then return {'closed', r[1], r[3] or ''} end
if now >= tonumber(r[2]) then
  redis.call('HSET', KEYS[1], 'state', 'expired')
  redis.call('ZREM', KEYS[2], ARGV[6])
  return {'closed', 'expired', ''}
end
if redis.call('EXISTS', r[4]) == 0 then return {'gone'} end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'by', ARGV[2], 'reason', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[6])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {'ok'}
"#
    ))
});

/// KEYS: record, index. ARGV: state (`expired`/`cancelled`), id. Returns {} (closed as
/// asked, or never shared), or {state, by, reason} of a decision that got in first.
static CLOSE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local r = redis.call('HMGET', KEYS[1], 'state', 'by', 'reason')
if not r[1] then return {} end
redis.call('ZREM', KEYS[2], ARGV[2])
if r[1] == 'pending' then
  redis.call('HSET', KEYS[1], 'state', ARGV[1])
  return {}
end
if r[1] == 'approved' or r[1] == 'denied' then return {r[1], r[2] or '', r[3] or ''} end
return {}
"#,
    )
});

/// A name for this replica: 64 random bits, hex.
pub(super) fn replica_name() -> String {
    let mut bytes = [0u8; 8];
    // A failed RNG leaves zeros: the name is not a secret, only unlikely to collide.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fleet as a desk's [`Ledger`].
#[derive(Debug)]
pub(in crate::gate) struct FleetLedger(pub(in crate::gate) Arc<Fleet>);

impl Fleet {
    fn record(&self, id: &str) -> String {
        self.key(&format!("ap:{id}"))
    }

    fn index(&self) -> String {
        self.key("ap:pending")
    }

    fn channel(&self) -> String {
        self.key("ap:decided")
    }

    fn alive_key(&self) -> String {
        self.key(&format!("replica:{}", self.replica))
    }
}

/// What the decision channel carries.
#[derive(serde::Serialize, serde::Deserialize)]
struct Announced {
    id: String,
    verdict: Verdict,
}

/// An id the desk could have made (32 lowercase hex digits); anything else is unknown
/// without asking Redis, so a path segment never becomes a key.
fn well_formed(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A shared call as approvers see it, its ages from Redis's clock.
fn shared_call(json: &str, now: u64, created: &str, expires: &str) -> Option<HeldCall> {
    let mut call: HeldCall = serde_json::from_str(json).ok()?;
    let created: u64 = created.parse().ok()?;
    let expires: u64 = expires.parse().ok()?;
    call.age_ms = now.saturating_sub(created);
    call.expires_in_ms = expires.saturating_sub(now);
    Some(call)
}

fn verdict_of(state: &str, by: &str, reason: &str) -> Option<Verdict> {
    let approve = match state {
        "approved" => true,
        "denied" => false,
        _ => return None,
    };
    Some(Verdict {
        approve,
        approver: by.to_owned(),
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    })
}

fn closed(id: &str, state: &str, by: &str) -> DecideError {
    let outcome = Outcome::ALL
        .into_iter()
        .find(|o| o.label() == state)
        .unwrap_or(Outcome::Cancelled);
    DecideError::Closed {
        id: id.to_owned(),
        outcome: outcome.label(),
        by: (!by.is_empty()).then(|| by.to_owned()),
    }
}

impl FleetLedger {
    /// One script call; `Unreachable` (said loudly by the fleet) if Redis does not answer.
    async fn call<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, Unreachable> {
        self.0
            .invoke("approval", invocation)
            .await
            .ok_or(Unreachable)
    }
}

impl Ledger for FleetLedger {
    fn share<'a>(&'a self, call: &'a HeldCall, timeout: Duration) -> Later<'a, ()> {
        Box::pin(async move {
            let fleet = &self.0;
            let json = serde_json::to_string(call).map_err(|_| Unreachable)?;
            let mut invocation = SHARE.prepare_invoke();
            invocation
                .key(fleet.record(&call.id))
                .key(fleet.index())
                .key(fleet.alive_key())
                .arg(json)
                .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
                .arg(REMEMBER_MS)
                .arg(&call.id);
            self.call::<u64>(&invocation).await.map(drop)
        })
    }

    fn list(&self) -> Later<'_, Vec<HeldCall>> {
        Box::pin(async move {
            let fleet = &self.0;
            let mut invocation = LIST.prepare_invoke();
            invocation
                .key(fleet.index())
                .arg(&fleet.settings.key_prefix)
                .arg(MAX_LISTED);
            let out: Vec<String> = self.call(&invocation).await?;
            let Some((now, rest)) = out.split_first() else {
                return Ok(Vec::new());
            };
            let now: u64 = now.parse().unwrap_or(0);
            Ok(rest
                .chunks_exact(3)
                .filter_map(|c| shared_call(&c[0], now, &c[1], &c[2]))
                .collect())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> Later<'a, Result<HeldCall, DecideError>> {
        Box::pin(async move {
            let unknown = || DecideError::Unknown(id.to_owned());
            if !well_formed(id) {
                return Ok(Err(unknown()));
            }
            let fleet = &self.0;
            let mut invocation = GET.prepare_invoke();
            invocation.key(fleet.record(id));
            let r: Vec<String> = self.call(&invocation).await?;
            let [now, state, by, call, created, expires, alive] = r.as_slice() else {
                return Ok(Err(unknown()));
            };
            if state != "pending" {
                return Ok(Err(closed(id, state, by)));
            }
            let now: u64 = now.parse().unwrap_or(0);
            Ok(match shared_call(call, now, created, expires) {
                Some(_) if alive != "1" => Err(DecideError::HolderGone(id.to_owned())),
                Some(call) if call.expires_in_ms > 0 => Ok(call),
                Some(_) => Err(closed(id, "expired", "")),
                None => Err(unknown()),
            })
        })
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        verdict: &'a Verdict,
    ) -> Later<'a, Result<(), DecideError>> {
        Box::pin(async move {
            if !well_formed(id) {
                return Ok(Err(DecideError::Unknown(id.to_owned())));
            }
            let fleet = &self.0;
            let message = serde_json::to_string(&Announced {
                id: id.to_owned(),
                verdict: verdict.clone(),
            })
            .map_err(|_| Unreachable)?;
            let state = verdict.outcome();
            let mut invocation = DECIDE.prepare_invoke();
            invocation
                .key(fleet.record(id))
                .key(fleet.index())
                .arg(state.label())
                .arg(&verdict.approver)
                .arg(verdict.reason.as_deref().unwrap_or(""))
                .arg(fleet.channel())
                .arg(message)
                .arg(id);
            let r: Vec<String> = self.call(&invocation).await?;
            Ok(match r.as_slice() {
                [ok] if ok == "ok" => Ok(()),
                [gone] if gone == "gone" => Err(DecideError::HolderGone(id.to_owned())),
                [c, state, by] if c == "closed" => Err(closed(id, state, by)),
                _ => Err(DecideError::Unknown(id.to_owned())),
            })
        })
    }

    fn close<'a>(&'a self, id: &'a str, outcome: Outcome) -> Later<'a, Option<Verdict>> {
        Box::pin(async move {
            let fleet = &self.0;
            let mut invocation = CLOSE.prepare_invoke();
            invocation
                .key(fleet.record(id))
                .key(fleet.index())
                .arg(outcome.label())
                .arg(id);
            let r: Vec<String> = self.call(&invocation).await?;
            Ok(match r.as_slice() {
                [state, by, reason] => verdict_of(state, by, reason),
                _ => None,
            })
        })
    }

    fn leave(&self) -> Later<'_, ()> {
        Box::pin(async move {
            let fleet = &self.0;
            fleet.leaving.store(true, Relaxed);
            let mut conn = fleet.conn("approval").ok_or(Unreachable)?;
            let mut del = redis::cmd("DEL");
            del.arg(fleet.alive_key());
            let called =
                tokio::time::timeout(fleet.settings.timeout, del.query_async::<()>(&mut conn))
                    .await;
            fleet.answered("approval", called).ok_or(Unreachable)
        })
    }

    fn refuses_alone(&self) -> bool {
        self.0.settings.on_failure == super::OnFailure::Refuse && !self.0.is_up()
    }
}

/// Keeps this replica alive in the store and wakes its held calls on decisions announced
/// by any replica; reconnects by itself. Every [`READ_BACK_EVERY`] it also reads back the
/// state of the calls it holds, so that a decision whose message was lost (a subscription
/// that broke or stalled unseen) still reaches its call.
pub(super) fn watch(fleet: Arc<Fleet>, desk: Arc<Desk>) {
    let alive = fleet.clone();
    let held = desk.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ALIVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tick.tick().await;
            if alive.leaving.load(Relaxed) {
                return;
            }
            let Some(mut conn) = alive.conn("approval") else {
                continue;
            };
            let mut set = redis::cmd("SET");
            set.arg(alive.alive_key())
                .arg(1)
                .arg("PX")
                .arg(ALIVE_FOR_MS);
            let called =
                tokio::time::timeout(alive.settings.timeout, set.query_async::<()>(&mut conn))
                    .await;
            alive.answered("approval", called);
            if n % READ_BACK_EVERY == 0 {
                read_back(&alive, &held).await;
            }
        }
    });
    tokio::spawn(async move {
        loop {
            if let Err(e) = listen(&fleet, &desk).await {
                fleet.failed("approval", &e.to_string());
            }
            tokio::time::sleep(super::RECONNECT_EVERY).await;
        }
    });
}

/// Reads back every held call's state in the store, and gives each a decision found there.
async fn read_back(fleet: &Arc<Fleet>, desk: &Desk) {
    for id in desk.pending_ids() {
        let Some(mut conn) = fleet.conn("approval") else {
            return;
        };
        let mut read = redis::cmd("HMGET");
        read.arg(fleet.record(&id))
            .arg("state")
            .arg("by")
            .arg("reason");
        let read = read.query_async::<Vec<Option<String>>>(&mut conn);
        let called = tokio::time::timeout(fleet.settings.timeout, read).await;
        if let Some([Some(state), by, reason]) = fleet.answered("approval", called).as_deref() {
            let by = by.as_deref().unwrap_or("");
            if let Some(v) = verdict_of(state, by, reason.as_deref().unwrap_or("")) {
                woken(desk, &id, v);
            }
        }
    }
}

/// One subscription, until it breaks.
async fn listen(fleet: &Arc<Fleet>, desk: &Desk) -> redis::RedisResult<()> {
    let connect = async {
        let mut pubsub = fleet.client.get_async_pubsub().await?;
        pubsub.subscribe(fleet.channel()).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let wait = fleet.settings.timeout.max(Duration::from_millis(500));
    let mut pubsub = tokio::time::timeout(wait, connect).await.map_err(|_| {
        redis::RedisError::from((
            redis::ErrorKind::Io,
            "no subscription to the fleet's decisions within the timeout",
        ))
    })??;
    // Decisions announced while this replica was not listening.
    read_back(fleet, desk).await;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let Ok(payload) = msg.get_payload::<String>() else {
            continue;
        };
        if let Ok(a) = serde_json::from_str::<Announced>(&payload) {
            woken(desk, &a.id, a.verdict);
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "the subscription to the fleet's decisions ended",
    )))
}

fn woken(desk: &Desk, id: &str, verdict: Verdict) {
    let (outcome, approver) = (verdict.outcome(), verdict.approver.clone());
    if desk.apply(id, verdict) {
        info!(approval.id = %id, decision = outcome.label(), approver = %approver,
            "Approval decided through another replica");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_the_desk_makes_become_keys() {
        assert!(well_formed("0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "../ap:pending\u{0}aaaaaaaaaaaaaaaaa",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_stored_state_is_a_verdict_only_when_decided() {
        let v = verdict_of("approved", "sub:alice", "").unwrap();
        assert!(v.approve && v.approver == "sub:alice" && v.reason.is_none());
        let v = verdict_of("denied", "id:x", "not /etc").unwrap();
        assert!(!v.approve && v.reason.as_deref() == Some("not /etc"));
        for other in ["pending", "expired", "cancelled", ""] {
            assert!(verdict_of(other, "", "").is_none(), "{other}");
        }
        match closed("i", "approved", "sub:bob") {
            DecideError::Closed { outcome, by, .. } => {
                assert_eq!((outcome, by.as_deref()), ("approved", Some("sub:bob")))
            }
            e => panic!("{e:?}"),
        }
    }
}
