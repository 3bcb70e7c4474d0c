//! Enums stored and sent as one fixed word per variant (command kinds, statuses, roles).

/// Implements `Display` (the variant's spelling) and `FromStr` (a spelling back to its variant)
/// for an enum that has `ALL` (every variant) and `as_str` (each variant's spelling), so the
/// two directions cannot disagree. `$unknown` turns a text that is no spelling into the error.
#[macro_export]
macro_rules! spelled_enum {
    ($ty:ident, $unknown:expr) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<$ty, String> {
                let unknown: fn(&str) -> String = $unknown;
                $ty::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| unknown(s))
            }
        }
    };
}
