//! The `settings!` macro: declares a settings struct whose every field names its environment variable, so that adding a setting is one line in one struct.
//!
//! ```text
//! settings! {
//!     /// The struct's doc.
//!     pub struct Group {
//!         /// `#[serde(...)]` attributes pass through, and so does a doc, added after the help.
//!         field: Type = var("NAME", Scope, Kind, Some("default"), "example", "meaning"),
//!         other: Type = var("OTHER", Scope, Kind, None, "example", "meaning").secret(),
//!         ...
//!         ;                       // then, optionally, nested groups
//!         /// A nested group's doc.
//!         nested: OtherGroup,
//!     }
//! }
//! ```
//!
//! It generates the struct (`Debug`, `Clone`, `Serialize`), `Group::load`, which reads each
//! field from its variable with [`crate::parse::Parser`] (the field's type decides how, the
//! variable's kind gives the bounds), and `Group::variables`, which lists the variables in
//! declaration order for [`crate::catalog`].
//!
//! A field's documentation is its variable's name and help, the text the README's table and
//! `wharf config --list` show, so the two cannot drift apart. That is why the macro takes the
//! `var(...)` call apart rather than any expression: a doc attribute needs the help as a
//! literal. [`crate::catalog::Variable`]'s builder methods (`.secret()`, `.required(...)`)
//! follow the call.

macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ty = var(
                    $var:literal, $scope:expr, $kind:expr, $default:expr, $example:literal, $help:literal $(,)?
                ) $( . $modifier:ident ( $($arg:expr),* ) )*
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
                #[doc = concat!("`", $var, "`: ", $help)]
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
                    $(
                        $field: p.get::<$ty>(
                            &var($var, $scope, $kind, $default, $example, $help) $( .$modifier($($arg),*) )*
                        ),
                    )*
                    $($( $group: <$gty>::load(p), )*)?
                }
            }

            /// This struct's variables, then its nested groups', in declaration order.
            pub fn variables(out: &mut Vec<catalog::Variable>) {
                $(
                    out.push(var($var, $scope, $kind, $default, $example, $help) $( .$modifier($($arg),*) )*);
                )*
                $($( <$gty>::variables(out); )*)?
            }
        }
    };
}
