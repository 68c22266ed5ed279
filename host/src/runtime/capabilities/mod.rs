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
pub mod policy;
pub mod wasi;

pub use capability::{AppShare, Capability, Load};
pub use policy::HostPolicy;

use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::state::{CapabilityStates, HostState};
use wasmtime::component::Linker;

/// Whether the host serves interface `import` itself (through a
/// capability, granted or refused there) rather than through a link: every
/// `wasi:` interface, and Spin's variables.
pub fn serves(import: &str) -> bool {
    import.starts_with("wasi:") || config::SPIN_VARIABLES.contains(&import)
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

            /// Adds every capability's host functions to `linker`.
            pub fn add_to_linker<C: Send + 'static>(&self, linker: &mut Linker<HostState<C>>) -> wasmtime::Result<()> {
                <outbound::Outbound as Capability>::add_to_linker(&self.outbound, linker)?;
                $(<$cap as Capability>::add_to_linker(&self.$field, linker)?;)*
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
