//! Plugs: what a member of a composed component gets in place of a host
//! interface whose grant differs from its root's.
//!
//! A composed component has one store, served with its root's grants. A
//! member (a callee fused into it) must not gain them: where its grant for
//! an interface differs, its import of that interface is renamed in the
//! composition (`links/compose.rs` decides, `links/fuse.rs` renames) and
//! served here instead, with the member's own grant:
//!
//! - [`Plug::Own`]: wasi:config and the environment answer from the
//!   member's own values;
//! - [`Plug::Deny`]: the member was granted no directory, so it finds no
//!   preopened directory, as a host without the grant answers.
//!
//! Interfaces without a plug here keep composition from holding: the link
//! stays dynamic, with the reason.

use crate::runtime::state::ConfigValues;
use wasmtime::StoreContextMut;
use wasmtime::component::types::{ComponentInstance, ComponentItem};
use wasmtime::component::{LinkerInstance, Val};
use wasmtime::{Engine, Result};

/// How a member's import of a host interface is served in a composition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plug {
    /// By the host, with the root's grants, which equal the member's.
    Share,
    /// With the member's own values: wasi:config, or its environment.
    Own,
    /// Denied: the member holds no grant of it.
    Deny,
}

/// Interfaces a [`Plug::Deny`] can stand in for, without their version.
/// (wasi:http's handler and wasi:keyvalue are not here: a component that
/// imports them without a grant does not load, composed or not.)
pub const DENIABLE: [&str; 1] = ["wasi:filesystem/preopens"];

/// Interfaces a [`Plug::Own`] serves, without their version.
pub const OWN: [&str; 3] = ["wasi:config/store", "wasi:config/runtime", "wasi:cli/environment"];

/// The interface of `import` without its version.
pub fn unversioned(import: &str) -> &str {
    import.split_once('@').map_or(import, |(name, _)| name)
}

/// A member's own values, for [`Plug::Own`].
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Its `config`.
    pub config: ConfigValues,
    /// Its `wasi.env`.
    pub env: Vec<(String, String)>,
}

/// Defines, in `instance`, `plug` for interface `interface` (the member's
/// import, of type `ty`), with the member's own `values`.
pub fn define<T: 'static>(
    instance: &mut LinkerInstance<'_, T>,
    engine: &Engine,
    (interface, ty): (&str, &ComponentInstance),
    plug: &Plug,
    values: &Values,
) -> Result<()> {
    let unversioned = unversioned(interface);
    match plug {
        Plug::Share => Ok(()),
        Plug::Own if unversioned == "wasi:cli/environment" => {
            let env = values.env.clone();
            instance.func_wrap("get-environment", move |_: StoreContextMut<'_, T>, (): ()| {
                Ok((env.clone(),))
            })?;
            instance.func_wrap("get-arguments", |_: StoreContextMut<'_, T>, (): ()| {
                Ok((Vec::<String>::new(),))
            })?;
            instance.func_wrap("initial-cwd", |_: StoreContextMut<'_, T>, (): ()| Ok((None::<String>,)))
        }
        Plug::Own => super::config::serve_values(instance, values.config.clone()),
        Plug::Deny => {
            for (name, item) in ty.exports(engine) {
                if !matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                    continue;
                }
                let answer = denial(unversioned, name);
                let (interface, function) = (interface.to_string(), name.to_string());
                instance.func_new(name, move |_, _, _, results| {
                    let Some(answer) = &answer else {
                        wasmtime::bail!("`{function}` of `{interface}` is denied: no grant");
                    };
                    if let Some(slot) = results.first_mut() {
                        *slot = answer.clone();
                    }
                    Ok(())
                })?;
            }
            Ok(())
        }
    }
}

/// What function `function` of denied interface `interface` answers:
/// what a host without the grant answers. `None`: it traps.
fn denial(interface: &str, function: &str) -> Option<Val> {
    match (interface, function) {
        ("wasi:filesystem/preopens", "get-directories") => Some(Val::List(Vec::new())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denied_interface_answers_as_a_host_without_the_grant() {
        for (interface, function, answer) in [
            ("wasi:filesystem/preopens", "get-directories", Some("List([])")),
            ("wasi:filesystem/preopens", "something-new", None),
        ] {
            assert_eq!(
                denial(interface, function).map(|v| format!("{v:?}")).as_deref(),
                answer,
                "{interface}#{function}"
            );
        }
        assert_eq!(unversioned("wasi:cli/environment@0.2.6"), "wasi:cli/environment");
    }
}
