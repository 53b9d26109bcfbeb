//! The `settings!` macro: declares a settings struct whose every field names its environment variable, so that adding a setting is one line in one struct.
//!
//! ```text
//! settings! {
//!     /// The struct's doc.
//!     pub struct Group {
//!         /// A field's doc; `#[serde(...)]` attributes pass through.
//!         field: Type = var("NAME", Scope, Kind, Some("default"), "example", "meaning"),
//!         ...
//!         ;                       // then, optionally, nested groups
//!         nested: OtherGroup,
//!     }
//! }
//! ```
//!
//! It generates the struct (`Debug`, `Clone`, `Serialize`), `Group::load`, which reads each
//! field from its variable with [`crate::parse::Parser`] (the field's type decides how, the
//! variable's kind gives the bounds), and `Group::variables`, which lists the variables in
//! declaration order for [`crate::catalog`].

macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = $var:expr
            ),* $(,)?
            $(
                ;
                $(
                    $(#[$gmeta:meta])*
                    $group:ident : $gty:ty
                ),* $(,)?
            )?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $ty,
            )*
            $($(
                $(#[$gmeta])*
                pub $group: $gty,
            )*)?
        }

        impl $name {
            /// Reads every field from its variable, recording problems in `p`.
            pub(crate) fn load(p: &mut Parser<'_>) -> Self {
                Self {
                    $( $field: p.get::<$ty>(&$var), )*
                    $($( $group: <$gty>::load(p), )*)?
                }
            }

            /// This struct's variables, then its nested groups', in declaration order.
            pub fn variables(out: &mut Vec<catalog::Variable>) {
                $( out.push($var); )*
                $($( <$gty>::variables(out); )*)?
            }
        }
    };
}
