//! Capabilities: the host-provided interfaces a component may import. Each
//! is one module with the same phases ([`Capability`]); the list below is
//! the only place that names them all, and [`Granted`] runs every phase of
//! every one of them for one component version.

pub mod capability;
pub mod config;
pub mod http;
pub mod keyvalue;
pub mod logging;
pub mod outbound;
pub mod plug;
pub mod policy;
pub mod wasi;

pub use capability::{AppShare, Capability, Load};
pub use policy::HostPolicy;

use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::state::{CapabilityStates, HostState};
use wasmtime::component::Linker;

/// Whether the host serves interface `import` itself (through a
/// capability, granted or refused there) rather than through a link: every
/// `wasi:` interface, and Spin's variables and key-value.
pub fn serves(import: &str) -> bool {
    import.starts_with("wasi:") || config::SPIN_VARIABLES.contains(&import) || import == keyvalue::spin::INTERFACE
}

/// Whether a component that imports or exports interface `name` must run
/// on the engine with concurrency support: WASI 0.3 (whose host functions
/// are async) and Spin's 3.0.0 interfaces.
pub fn needs_concurrency(name: &str) -> bool {
    let Some((package, version)) = name.split_once('@') else {
        return false;
    };
    (package.starts_with("wasi:") && version.starts_with("0.3"))
        || (package.starts_with("spin:") && version.starts_with("3."))
}

/// Declares the capabilities after `outbound`, in the order they are
/// prepared and linked. `outbound` is always first: the others read what it
/// parsed ([`Load::outbound`]).
macro_rules! capabilities {
    ($($field:ident: $cap:ty),* $(,)?) => {
        /// Every capability's load-time share for one component version.
        pub struct Granted {
            outbound: <outbound::Outbound as Capability>::Prepared,
            $($field: <$cap as Capability>::Prepared,)*
        }

        /// What component `name` of `app` asks for that `policy` does not
        /// allow: every capability's answer.
        pub fn admit(policy: &HostPolicy, app: &Manifest, name: &str, spec: &ComponentSpec) -> Vec<String> {
            let mut problems = <outbound::Outbound as Capability>::admit(policy, app, name, spec);
            $(problems.extend(<$cap as Capability>::admit(policy, app, name, spec));)*
            problems
        }

        impl Granted {
            /// Checks component `name`'s grants against its `imports`: every
            /// capability's problems together. `app` holds what the app
            /// phase opened (its key-value buckets).
            pub fn prepare(
                name: &str,
                spec: &ComponentSpec,
                imports: &[String],
                app: &AppShare,
            ) -> Result<Granted, Vec<String>> {
                let mut problems = Vec::new();
                let none = capability::Destinations::none(name);
                let mut load = Load { app, name, spec, imports, outbound: &none };
                let outbound = <outbound::Outbound as Capability>::prepare(&load)
                    .map_err(|p| problems.extend(p))
                    .unwrap_or_else(|()| none.clone());
                load.outbound = &outbound;
                $(let $field = <$cap as Capability>::prepare(&load).map_err(|p| problems.extend(p)).ok();)*
                match ($($field,)*) {
                    ($(Some($field),)*) if problems.is_empty() => Ok(Granted { outbound, $($field),* }),
                    _ => Err(problems),
                }
            }

            /// Adds every capability's host functions to `linker`; the async
            /// ones (WASI 0.3) only when its engine is `concurrent`.
            pub fn add_to_linker<C: Send + 'static>(&self, linker: &mut Linker<HostState<C>>, concurrent: bool) -> wasmtime::Result<()> {
                <outbound::Outbound as Capability>::add_to_linker(&self.outbound, linker, concurrent)?;
                $(<$cap as Capability>::add_to_linker(&self.$field, linker, concurrent)?;)*
                Ok(())
            }

            /// The capabilities' state for one new instance.
            pub fn instance(&self) -> wasmtime::Result<CapabilityStates> {
                Ok(CapabilityStates {
                    outbound: <outbound::Outbound as Capability>::instance(&self.outbound)?,
                    $($field: <$cap as Capability>::instance(&self.$field)?,)*
                })
            }
        }
    };
}

capabilities! {
    wasi: wasi::Wasi,
    http: http::Http,
    config: config::Config,
    keyvalue: keyvalue::KeyValue,
    logging: logging::Logging,
}

#[cfg(test)]
mod tests {
    use super::needs_concurrency;

    #[test]
    fn wasi_0_3_and_spin_3_need_concurrency_and_nothing_else_does() {
        for (name, needs) in [
            ("wasi:http/handler@0.3.0", true),
            ("wasi:cli/environment@0.3.0-rc-2025-09-16", true),
            ("spin:variables/variables@3.0.0", true),
            ("spin:key-value/key-value@3.0.0", true),
            ("wasi:http/incoming-handler@0.2.6", false),
            ("wasi:keyvalue/store@0.2.0-draft", false),
            ("fermyon:spin/variables@2.0.0", false),
            ("insurance:rating/rater@0.3.0", false),
            ("wasi:cli/environment", false),
            ("spin:variables/variables@30", false),
        ] {
            assert_eq!(needs_concurrency(name), needs, "{name}");
        }
    }
}
