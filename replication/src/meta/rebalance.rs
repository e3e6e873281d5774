//! Planning moves: which shard copies should change node so every node holds an even share.
//!
//! ```text
//!  nodes (not draining)   copies  primaries  bytes        greedy: take the single move that
//!   n1                      4        2       40 MB        lowers (Σ copies², Σ primaries²,
//!   n2                      4        2       41 MB  ──►   Σ bytes²) the most; repeat until no
//!   n3 (new)                0        0        0           move helps. n1→n3, n2→n3 ...
//! ```
//! A copy never lands on a node that already holds the same shard, each shard moves at most
//! once per plan (the runner takes moves in order, one at a time), and a draining node's
//! copies all leave first. Only a primary's copy moving makes the target the primary, so the
//! primaries term is what spreads write load onto a new node.

use std::collections::{BTreeMap, BTreeSet};

use protocol::cluster::{ClusterState, NodeId, ShardId};
use protocol::jobs::MoveJob;

/// One node's share, as the plan stands.
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    copies: i64,
    primaries: i64,
    /// Kibibytes, so squares stay far from overflow.
    kib: i64,
}

/// The placement the plan works on: per shard, (primary, replicas).
struct Placement {
    shards: BTreeMap<ShardId, (NodeId, Vec<NodeId>)>,
    kib: BTreeMap<ShardId, i64>,
    nodes: BTreeSet<NodeId>,
}

impl Placement {
    fn new(
        state: &ClusterState,
        keyspace: Option<&str>,
        nodes: BTreeSet<NodeId>,
        shard_bytes: &BTreeMap<ShardId, u64>,
    ) -> Placement {
        let shards: BTreeMap<ShardId, (NodeId, Vec<NodeId>)> = state
            .shards
            .values()
            .filter(|s| keyspace.is_none_or(|k| s.keyspace == k))
            .map(|s| (s.id, (s.primary, s.replicas.clone())))
            .collect();
        let kib = shards
            .keys()
            .map(|id| {
                let bytes = shard_bytes.get(id).copied().unwrap_or(0);
                (*id, (bytes / 1024) as i64)
            })
            .collect();
        Placement { shards, kib, nodes }
    }

    fn loads(&self) -> BTreeMap<NodeId, Load> {
        let mut loads: BTreeMap<NodeId, Load> =
            self.nodes.iter().map(|n| (*n, Load::default())).collect();
        for (id, (primary, replicas)) in &self.shards {
            let kib = self.kib.get(id).copied().unwrap_or(0);
            for (node, is_primary) in
                std::iter::once((*primary, true)).chain(replicas.iter().map(|r| (*r, false)))
            {
                if let Some(l) = loads.get_mut(&node) {
                    l.copies += 1;
                    l.primaries += i64::from(is_primary);
                    l.kib += kib;
                }
            }
        }
        loads
    }

    fn holds(&self, shard: ShardId, node: NodeId) -> bool {
        self.shards
            .get(&shard)
            .is_some_and(|(p, r)| *p == node || r.contains(&node))
    }

    fn apply(&mut self, shard: ShardId, from: NodeId, to: NodeId) {
        if let Some((primary, replicas)) = self.shards.get_mut(&shard) {
            if *primary == from {
                *primary = to;
            } else if let Some(r) = replicas.iter_mut().find(|r| **r == from) {
                *r = to;
            }
        }
    }
}

/// What a plan minimises, compared in order: Σ copies², Σ primaries², Σ KiB².
type Cost = (i64, i64, i128);

fn cost(loads: &BTreeMap<NodeId, Load>) -> Cost {
    loads.values().fold((0, 0, 0), |(c, p, b), l| {
        (
            c + l.copies * l.copies,
            p + l.primaries * l.primaries,
            b + i128::from(l.kib) * i128::from(l.kib),
        )
    })
}

/// The nodes that may take copies: registered, not draining, not `except`.
fn eligible(state: &ClusterState, except: Option<NodeId>) -> BTreeSet<NodeId> {
    state
        .nodes
        .keys()
        .copied()
        .filter(|n| Some(*n) != except && !state.draining.contains(n))
        .collect()
}

/// Moves that even out copies, then primaries, then bytes over the nodes that are not
/// draining, after moving every copy off draining nodes. `keyspace` limits the plan to one
/// keyspace's shards; `shard_bytes` is each shard's size (missing: 0).
pub fn plan_rebalance(
    state: &ClusterState,
    keyspace: Option<&str>,
    shard_bytes: &BTreeMap<ShardId, u64>,
) -> Vec<MoveJob> {
    let mut plan = Placement::new(state, keyspace, eligible(state, None), shard_bytes);
    let mut moves = Vec::new();
    let mut moved = BTreeSet::new();
    for drained in &state.draining {
        drain_into(
            state,
            &mut plan,
            *drained,
            &mut moves,
            &mut moved,
            "rebalance",
        );
    }
    loop {
        let loads = plan.loads();
        let base = cost(&loads);
        let mut best: Option<(Cost, ShardId, NodeId, NodeId)> = None;
        for (id, (primary, replicas)) in &plan.shards {
            if moved.contains(id) {
                continue;
            }
            for from in std::iter::once(primary).chain(replicas.iter()) {
                for to in &plan.nodes {
                    if plan.holds(*id, *to)
                        || !loads.contains_key(from)
                        || !state.shard_may_use(*id, *to)
                    {
                        continue;
                    }
                    let mut after = loads.clone();
                    let kib = plan.kib.get(id).copied().unwrap_or(0);
                    let is_primary = i64::from(from == primary);
                    if let Some(l) = after.get_mut(from) {
                        l.copies -= 1;
                        l.primaries -= is_primary;
                        l.kib -= kib;
                    }
                    if let Some(l) = after.get_mut(to) {
                        l.copies += 1;
                        l.primaries += is_primary;
                        l.kib += kib;
                    }
                    let c = cost(&after);
                    if c < base && best.as_ref().is_none_or(|(b, ..)| c < *b) {
                        best = Some((c, *id, *from, *to));
                    }
                }
            }
        }
        let Some((_, shard, from, to)) = best else {
            break;
        };
        plan.apply(shard, from, to);
        moved.insert(shard);
        moves.push(MoveJob::new(shard, from, to, "rebalance"));
    }
    moves
}

/// Moves every copy on `node` to the other nodes that are not draining, each to the least
/// loaded node that does not hold that shard yet.
pub fn plan_drain(
    state: &ClusterState,
    node: NodeId,
    shard_bytes: &BTreeMap<ShardId, u64>,
) -> Vec<MoveJob> {
    let mut plan = Placement::new(state, None, eligible(state, Some(node)), shard_bytes);
    let mut moves = Vec::new();
    let mut moved = BTreeSet::new();
    drain_into(
        state,
        &mut plan,
        node,
        &mut moves,
        &mut moved,
        &format!("drain node {node}"),
    );
    moves
}

fn drain_into(
    state: &ClusterState,
    plan: &mut Placement,
    drained: NodeId,
    moves: &mut Vec<MoveJob>,
    moved: &mut BTreeSet<ShardId>,
    reason: &str,
) {
    let on_node: Vec<ShardId> = plan
        .shards
        .iter()
        .filter(|(_, (p, r))| *p == drained || r.contains(&drained))
        .map(|(id, _)| *id)
        .collect();
    for shard in on_node {
        let loads = plan.loads();
        let target = loads
            .iter()
            .filter(|(n, _)| !plan.holds(shard, **n) && state.shard_may_use(shard, **n))
            .min_by_key(|(n, l)| (l.copies, l.primaries, l.kib, **n))
            .map(|(n, _)| *n);
        // No node can take it (too few nodes for the replication factor): it stays, and the
        // drain reports the copies it could not place.
        if let Some(to) = target {
            plan.apply(shard, drained, to);
            moved.insert(shard);
            moves.push(MoveJob::new(shard, drained, to, reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::cluster::{MetaCommand, NodeInfo, ShardInfo};
    use protocol::hash::split_space;

    /// `nodes` registered; shards placed round-robin on the first `placed_on` of them.
    fn cluster(nodes: &[NodeId], placed_on: usize, shards: u32, copies: usize) -> ClusterState {
        let mut s = ClusterState::default();
        for &n in nodes {
            s.apply(&MetaCommand::RegisterNode(NodeInfo {
                id: n,
                addr: format!("n{n}:1"),
            }))
            .unwrap();
        }
        for (i, range) in split_space(shards).into_iter().enumerate() {
            let on = &nodes[..placed_on];
            s.shards.insert(
                i as u32,
                ShardInfo {
                    id: i as u32,
                    keyspace: "default".into(),
                    range,
                    primary: on[i % on.len()],
                    replicas: (1..copies).map(|k| on[(i + k) % on.len()]).collect(),
                    epoch: 1,
                    frozen: false,
                    sealed: false,
                    split_from: None,
                },
            );
        }
        s
    }

    fn apply_all(state: &mut ClusterState, moves: &[MoveJob]) {
        for m in moves {
            let s = state.shards.get_mut(&m.shard).unwrap();
            assert!(s.placed_on(m.from), "{m:?}");
            assert!(!s.placed_on(m.to), "two copies on one node: {m:?}");
            if s.primary == m.from {
                s.primary = m.to;
            } else {
                for r in s.replicas.iter_mut().filter(|r| **r == m.from) {
                    *r = m.to;
                }
            }
        }
    }

    fn spread(state: &ClusterState) -> (usize, usize) {
        let counts: Vec<usize> = state
            .nodes
            .keys()
            .filter(|n| !state.draining.contains(n))
            .map(|n| state.copies_on(*n))
            .collect();
        (*counts.iter().min().unwrap(), *counts.iter().max().unwrap())
    }

    #[test]
    fn a_new_node_gets_its_share_and_some_primaries() {
        let mut s = cluster(&[1, 2, 3], 2, 8, 2);
        let moves = plan_rebalance(&s, None, &BTreeMap::new());
        assert!(moves.len() >= 4, "{moves:?}");
        let shards: BTreeSet<_> = moves.iter().map(|m| m.shard).collect();
        assert_eq!(shards.len(), moves.len(), "a shard moves at most once");
        apply_all(&mut s, &moves);
        let (min, max) = spread(&s);
        assert!(max - min <= 1, "copies even: {min}..{max}");
        let primaries_on_3 = s.shards.values().filter(|sh| sh.primary == 3).count();
        assert!(primaries_on_3 >= 2, "the new node leads some shards");
        assert!(
            plan_rebalance(&s, None, &BTreeMap::new()).is_empty(),
            "balanced stays put"
        );
    }

    /// Among moves that even out copies equally, the one that evens out bytes wins: node 1
    /// holds shards 0, 2 and 4 (shard 4 is ten times the size of the others), node 2 holds
    /// 1, 3 and 5, node 3 is new. By copies alone the first shard of node 1 would go; by
    /// bytes it is the big one.
    #[test]
    fn bytes_pick_which_copy_moves() {
        let mut s = cluster(&[1, 2], 2, 6, 1);
        s.apply(&MetaCommand::RegisterNode(NodeInfo {
            id: 3,
            addr: "n3:1".into(),
        }))
        .unwrap();
        let bytes: BTreeMap<ShardId, u64> = (0..6)
            .map(|id| (id, if id == 4 { 10 << 20 } else { 1 << 20 }))
            .collect();
        let moves = plan_rebalance(&s, None, &bytes);
        assert_eq!(
            (moves[0].shard, moves[0].from, moves[0].to),
            (4, 1, 3),
            "{moves:?}"
        );
        assert_eq!(moves.len(), 2, "{moves:?}");
        let even = plan_rebalance(&s, None, &BTreeMap::new());
        assert_eq!(
            even[0].shard, 0,
            "without sizes the first candidate goes: {even:?}"
        );
    }

    #[test]
    fn drain_empties_a_node_without_doubling_copies() {
        let mut s = cluster(&[1, 2, 3], 3, 6, 2);
        let moves = plan_drain(&s, 2, &BTreeMap::new());
        assert_eq!(moves.len(), s.copies_on(2));
        apply_all(&mut s, &moves);
        assert_eq!(s.copies_on(2), 0);
        assert!(
            moves
                .iter()
                .all(|m| m.from == 2 && m.reason == "drain node 2")
        );
    }

    #[test]
    fn a_drain_with_too_few_nodes_leaves_what_it_cannot_place() {
        let s = cluster(&[1, 2], 2, 4, 2);
        assert!(plan_drain(&s, 2, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn keyspace_limits_the_plan() {
        let mut s = cluster(&[1, 2, 3], 2, 4, 2);
        for sh in s.shards.values_mut() {
            sh.keyspace = "other".into();
        }
        assert!(plan_rebalance(&s, Some("default"), &BTreeMap::new()).is_empty());
        assert!(!plan_rebalance(&s, Some("other"), &BTreeMap::new()).is_empty());
    }
}
