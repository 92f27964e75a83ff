//! [`label_enum!`]: a fieldless enum whose variants are metric labels, declared once.
//!
//! Counters by reason are arrays of atomics indexed by `variant as usize`, exported under
//! `label()` for every variant of `ALL`. Written by hand, `ALL`, the array length and the
//! label match were three lists kept in step by eye: a variant added to the enum but not to
//! `ALL` compiled, and its count was never exported. Here one list generates all three.

/// Declares a fieldless label enum, each variant with its docs and its metric label, and
/// generates on it:
/// - `COUNT`, the number of variants (the length of a counter array);
/// - `ALL`, every variant in declaration order, so that `ALL[i] as usize == i`;
/// - `LABELS`, the labels in the same order;
/// - `label()`, the variant's label, by an exhaustive match.
///
/// Two variants with one label fail to compile.
///
/// The enum derives `Clone, Copy, Debug, PartialEq, Eq, Hash`; other attributes (docs,
/// `#[non_exhaustive]`) are written before `enum` as usual.
///
/// ```text
/// label_enum! {
///     /// Why a connection was closed.
///     #[non_exhaustive]
///     pub enum Closed {
///         /// No request in time.
///         FirstRequestTimeout => "first_request_timeout",
///     }
/// }
/// ```
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident => $label:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $(
                $(#[$variant_meta])*
                $variant,
            )+
        }

        // Not every enum uses every item.
        #[allow(dead_code)]
        impl $name {
            /// How many variants there are: the length of an array of counters indexed by
            /// `variant as usize`.
            pub const COUNT: usize = [$($label),+].len();

            /// Every variant, in label order (declaration order, so `ALL[i] as usize == i`).
            pub const ALL: [$name; Self::COUNT] = [$($name::$variant),+];

            /// Every label, in the order of [`ALL`](Self::ALL).
            pub const LABELS: [&'static str; Self::COUNT] = [$($label),+];

            /// The metric label.
            pub const fn label(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        // Two variants under one label would export two samples with the same label set.
        const _: () = {
            let labels = $name::LABELS;
            let mut i = 0;
            while i < labels.len() {
                let mut j = i + 1;
                while j < labels.len() {
                    assert!(
                        !$crate::label::same(labels[i], labels[j]),
                        "two variants share a label"
                    );
                    j += 1;
                }
                i += 1;
            }
        };
    };
}

pub(crate) use label_enum;

/// `a == b`, in a const context (for [`label_enum!`]'s check that labels are distinct).
pub(crate) const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    label_enum! {
        /// A test enum.
        enum Colour {
            /// Red.
            Red => "red",
            /// Green.
            Green => "green",
            /// Blue.
            Blue => "blue",
        }
    }

    #[test]
    fn all_lists_every_variant_at_its_discriminant() {
        assert_eq!(Colour::COUNT, 3);
        for (i, c) in Colour::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(c.label(), Colour::LABELS[i]);
        }
        assert_eq!(Colour::Green.label(), "green");
        assert_eq!(Colour::LABELS, ["red", "green", "blue"]);
    }
}
