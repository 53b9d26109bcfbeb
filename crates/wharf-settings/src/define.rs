//! The `settings!` macro: declares a settings struct whose every field names its environment variable, so that adding a setting is one line in one struct.
//!
//! ```text
//! settings! {
//!     /// The struct's doc.
//!     pub struct Group {
//!         /// The variable's meaning: this doc comment is the help that the README's table and
//!         /// `wharf config --list` show. `#[serde(...)]` attributes pass through.
//!         field: Type = var("NAME", Scope, Kind, Some("default"), "example"),
//!         /// Another meaning.
//!         other: Type = var("OTHER", Scope, Kind, None, "example").secret(),
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
//! A field's doc comment is its variable's help, so the code's documentation, the README's table
//! and `wharf config --list` cannot drift apart. [`crate::catalog::Variable`]'s builder methods
//! (`.secret()`, `.required(...)`) follow the `var(...)` call.

macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$($fattr:tt)*])*
                $field:ident : $ty:ty = var(
                    $var:literal, $scope:expr, $kind:expr, $default:expr, $example:literal $(,)?
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
                $(#[$($fattr)*])*
                #[doc = ""]
                #[doc = concat!("Read from `", $var, "`.")]
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
                            &var($var, $scope, $kind, $default, $example, doc_text!([] $([$($fattr)*])*))
                                $( .$modifier($($arg),*) )*
                        ),
                    )*
                    $($( $group: <$gty>::load(p), )*)?
                }
            }

            /// This struct's variables, then its nested groups', in declaration order.
            pub fn variables(out: &mut Vec<catalog::Variable>) {
                $(
                    out.push(
                        var($var, $scope, $kind, $default, $example, doc_text!([] $([$($fattr)*])*))
                            $( .$modifier($($arg),*) )*
                    );
                )*
                $($( <$gty>::variables(out); )*)?
            }
        }
    };
}

/// The text of the `#[doc]` attributes among a field's attributes, as one line: a field's doc
/// comment is its variable's help. Other attributes (`#[serde(...)]`) are skipped.
macro_rules! doc_text {
    ([$($acc:expr),*]) => { concat!($($acc),*).trim_ascii() };
    ([$($acc:expr),*] [doc = $doc:literal] $($rest:tt)*) => { doc_text!([$($acc,)* $doc] $($rest)*) };
    ([$($acc:expr),*] [$($other:tt)*] $($rest:tt)*) => { doc_text!([$($acc),*] $($rest)*) };
}

/// Declares enums whose variants a variable names by a word, each word written once: it is both
/// the parsed value (`Choice::OPTIONS`, the first being the fallback) and the serialised one.
macro_rules! choice {
    ($(
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $word:literal => $variant:ident ),+ $(,)?
        }
    )+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $word)] $variant, )+
        }

        impl Choice for $name {
            const OPTIONS: &'static [(&'static str, Self)] = &[$(($word, $name::$variant)),+];
        }
    )+};
}
