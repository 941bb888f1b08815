//! Composing two components the way `wac plug` does: the exports of a *plug*
//! satisfy the matching imports of an *app* (the "socket"), and the result
//! is one component.
//!
//! Here the app imports `gcp:db-connector/connector@0.2.0` and the plug is
//! the connector component, which exports it. Every other import of either
//! (WASI, `wasi:keyvalue`) stays an import of the result, shared by name, and
//! the result exports what the app exports.
//!
//! Built on `wac-graph`, the library behind `wac plug`, so the component
//! encoding (type sections, aliases, nested components) is not ours to get
//! right.

use std::error::Error;

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, PackageId, PlugError};

/// Plugs `plug`'s exports into `app`'s imports of the same name (or a
/// semver-compatible one) and encodes the composition.
///
/// Errors (as text for a person, naming which input failed): an input that
/// is not a binary component, a plug that exports nothing the app imports,
/// or types that do not line up.
pub fn compose(app: &[u8], plug: &[u8]) -> Result<Vec<u8>, String> {
    let mut graph = CompositionGraph::new();
    let app = register(&mut graph, "compose:app", app, "the app")?;
    let plug = register(&mut graph, "compose:plug", plug, "the plug")?;
    wac_graph::plug(&mut graph, vec![plug], app).map_err(|err| match err {
        PlugError::NoPlugHappened => {
            "the plug exports nothing the app imports (with a matching type)".to_string()
        }
        PlugError::GraphError { source } => format!("composing failed: {}", chain(&*source)),
    })?;
    graph
        .encode(EncodeOptions::default())
        .map_err(|err| format!("encoding the composition failed: {}", chain(&err)))
}

fn register(
    graph: &mut CompositionGraph,
    name: &str,
    bytes: &[u8],
    what: &str,
) -> Result<PackageId, String> {
    let package = Package::from_bytes(name, None, bytes, graph.types_mut())
        .map_err(|err| format!("{what} is not a usable component: {}", chain(&*err)))?;
    graph
        .register_package(package)
        .map_err(|err| format!("{what}: {}", chain(&err)))
}

/// An error and its sources, `a: b: c`, as `{:#}` prints an anyhow error.
fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::Component;
    use wasmtime::Engine;

    /// Imports `test:greet/greeter` (one function) and `test:other/log`, and
    /// exports a `run` that calls `greet`.
    const APP: &str = r#"
        (component
          (import "test:greet/greeter@0.1.0" (instance $greeter
            (export "greet" (func (result u32)))))
          (import "test:other/log@0.1.0" (instance $log
            (export "log" (func))))
          (core module $m
            (import "greeter" "greet" (func $greet (result i32)))
            (func (export "run") (result i32) (i32.add (call $greet) (i32.const 1))))
          (core func $greet (canon lower (func $greeter "greet")))
          (core instance $greeter_core (export "greet" (func $greet)))
          (core instance $i (instantiate $m (with "greeter" (instance $greeter_core))))
          (func (export "run") (result u32) (canon lift (core func $i "run"))))
    "#;

    /// Exports `test:greet/greeter` with `greet` returning 41.
    const PLUG: &str = r#"
        (component
          (core module $m (func (export "greet") (result i32) (i32.const 41)))
          (core instance $i (instantiate $m))
          (func $greet (result u32) (canon lift (core func $i "greet")))
          (instance $greeter (export "greet" (func $greet)))
          (export "test:greet/greeter@0.1.0" (instance $greeter)))
    "#;

    fn imports(bytes: &[u8]) -> Vec<String> {
        let engine = Engine::default();
        let component = Component::new(&engine, bytes).unwrap();
        crate::component_imports(&engine, &component)
    }

    #[test]
    fn plugs_the_matching_import_and_keeps_the_others() {
        let app = wat::parse_str(APP).unwrap();
        let plug = wat::parse_str(PLUG).unwrap();
        assert_eq!(
            imports(&app),
            ["test:greet/greeter@0.1.0", "test:other/log@0.1.0"]
        );
        let composed = compose(&app, &plug).unwrap();
        assert_eq!(imports(&composed), ["test:other/log@0.1.0"]);

        // And it runs: `run` reaches the plug's `greet` through the app.
        let engine = Engine::default();
        let component = Component::new(&engine, &composed).unwrap();
        let mut linker = wasmtime::component::Linker::<()>::new(&engine);
        linker
            .instance("test:other/log@0.1.0")
            .unwrap()
            .func_wrap("log", |_, (): ()| Ok(()))
            .unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let run = instance
            .get_typed_func::<(), (u32,)>(&mut store, "run")
            .unwrap();
        assert_eq!(run.call(&mut store, ()).unwrap(), (42,));
    }

    #[test]
    fn a_plug_without_matching_exports_is_an_error() {
        let app = wat::parse_str(APP).unwrap();
        let unrelated = wat::parse_str("(component)").unwrap();
        let err = compose(&app, &unrelated).unwrap_err();
        assert!(err.contains("exports nothing the app imports"), "{err}");
    }

    #[test]
    fn inputs_that_are_not_components_are_named() {
        let plug = wat::parse_str(PLUG).unwrap();
        let err = compose(b"not wasm", &plug).unwrap_err();
        assert!(
            err.starts_with("the app is not a usable component"),
            "{err}"
        );
        let core_module = wat::parse_str("(module)").unwrap();
        let app = wat::parse_str(APP).unwrap();
        let err = compose(&app, &core_module).unwrap_err();
        assert!(
            err.starts_with("the plug is not a usable component"),
            "{err}"
        );
    }
}
