//! Arbitrary SQL text through the SQL entry point: the parser (with Tessera's token rewrites),
//! the router's catalog rewrite and view expansion, the router's planner over a cluster map
//! with tables on four shards, and the engine's binder and executor over in-memory tables with
//! rows — the path a simple query takes. Errors are fine; panics are not.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use protocol::cluster::ClusterState;

struct World {
    state: ClusterState,
    tables: router::fuzzing::Tables,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let (state, tables) = router::fuzzing::world();
        World { state, tables }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    if sql.len() > 2048 {
        return;
    }
    let w = world();
    router::fuzzing::run_sql(sql, &w.state, &w.tables);
});
