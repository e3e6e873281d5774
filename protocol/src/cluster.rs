//! The cluster map that meta replicates with Raft and every router and node caches.
//!
//! ```text
//! ClusterState (version n)
//!  ├─ nodes:     id → address                     (service discovery)
//!  ├─ keyspaces: name → shard count, replication factor
//!  ├─ tables:    name → schema, keyspace, shard key, distribution
//!  ├─ shards:    id → keyspace, hash range, primary, replicas, epoch, frozen/sealed, split_from
//!  ├─ draining:  nodes being emptied (no new copies land there)
//!  └─ jobs:      id → shard move and its phase (see `jobs`)
//! ```
//! Every applied command bumps `version`; followers of the map ask meta to "watch after
//! version n" and get the state as soon as it is newer, so they never miss a change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::hash::HashRange;
use crate::jobs::{JobId, JobKind, JobPhase, MoveJob};
use crate::schema::TableSchema;

pub type NodeId = u64;
pub type ShardId = u32;

pub const DEFAULT_KEYSPACE: &str = "default";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Internal-protocol address (host:port).
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyspaceInfo {
    pub name: String,
    pub shard_count: u32,
    /// Copies of each shard, primary included.
    pub replication_factor: u32,
    /// The nodes its shards may live on (federation: a keyspace on its own machines); empty
    /// for any node.
    pub nodes: Vec<NodeId>,
}

impl KeyspaceInfo {
    /// Whether this keyspace's shards may have a copy on `node`.
    pub fn allows(&self, node: NodeId) -> bool {
        self.nodes.is_empty() || self.nodes.contains(&node)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distribution {
    Sharded,
    Reference,
    Single,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub schema: TableSchema,
    pub keyspace: String,
    pub distribution: Distribution,
    /// Positions of the shard-key columns in `schema.columns`.
    pub shard_key: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: ShardId,
    pub keyspace: String,
    pub range: HashRange,
    pub primary: NodeId,
    /// Followers, in the order they were placed (never includes the primary).
    pub replicas: Vec<NodeId>,
    /// Bumped whenever the primary changes; a node refuses writes that carry an older epoch.
    pub epoch: u64,
    /// A move is switching this shard: its primary opens no new write (or transaction) until
    /// the flag is cleared; routers hold such statements and retry them.
    pub frozen: bool,
    /// A split is trimming this shard to its new range: it answers nothing (reads included)
    /// until the flag is cleared.
    pub sealed: bool,
    /// Set while this shard is being split off `split_from`: its copies follow that shard's
    /// primary and hold all of its rows, and no statement is routed to it yet.
    pub split_from: Option<ShardId>,
}

impl ShardInfo {
    /// Whether `node` holds a copy (primary or replica).
    pub fn placed_on(&self, node: NodeId) -> bool {
        self.primary == node || self.replicas.contains(&node)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    pub version: u64,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub keyspaces: BTreeMap<String, KeyspaceInfo>,
    pub tables: BTreeMap<String, TableInfo>,
    pub shards: BTreeMap<ShardId, ShardInfo>,
    pub draining: BTreeSet<NodeId>,
    pub jobs: BTreeMap<JobId, MoveJob>,
    pub sequences: BTreeMap<String, SequenceInfo>,
    pub views: BTreeMap<String, ViewInfo>,
    /// Login and group roles (CREATE ROLE), by name.
    pub roles: BTreeMap<String, RoleInfo>,
    /// The OID the next CREATE ROLE gets: OIDs are never reused, so a session that logged in
    /// as a dropped role never matches a newer role.
    pub next_role_oid: u32,
}

/// A role (CREATE ROLE / CREATE USER). Every router authenticates clients against these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleInfo {
    pub name: String,
    pub oid: u32,
    pub superuser: bool,
    pub create_role: bool,
    pub create_db: bool,
    pub can_login: bool,
    pub inherit: bool,
    pub replication: bool,
    pub bypass_rls: bool,
    /// CONNECTION LIMIT; -1 for none.
    pub conn_limit: i32,
    /// The stored secret in PostgreSQL's text forms: `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`
    /// or `md5<hex of md5(password ‖ name)>`; never the password itself.
    pub password: Option<String>,
    /// VALID UNTIL, as the text given.
    pub valid_until: Option<String>,
}

impl RoleInfo {
    /// A superuser with every attribute (the bootstrap role).
    pub fn superuser(name: &str, oid: u32, password: Option<String>) -> RoleInfo {
        RoleInfo {
            name: name.to_string(),
            oid,
            superuser: true,
            create_role: true,
            create_db: true,
            can_login: true,
            inherit: true,
            replication: true,
            bypass_rls: true,
            conn_limit: -1,
            password,
            valid_until: None,
        }
    }
}

/// The OID of the first role (the bootstrap superuser), as in PostgreSQL.
pub const BOOTSTRAP_ROLE_OID: u32 = 10;
/// The OID given to the first role created afterwards (PostgreSQL's first user OID).
pub const FIRST_ROLE_OID: u32 = 16384;

/// A view (CREATE VIEW): a stored query the router expands wherever the view is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewInfo {
    pub name: String,
    /// The defining query, as SQL text.
    pub query: String,
    /// The view's columns: the declared names, else the query's output names.
    pub columns: Vec<crate::schema::ResultColumn>,
    /// The tables and views the query reads (they cannot be dropped while the view exists).
    pub depends_on: Vec<String>,
}

impl ClusterState {
    /// Whether shard `shard`'s keyspace lets it have a copy on `node`.
    pub fn shard_may_use(&self, shard: ShardId, node: NodeId) -> bool {
        self.shards
            .get(&shard)
            .and_then(|s| self.keyspaces.get(&s.keyspace))
            .is_none_or(|ks| ks.allows(node))
    }

    /// True if a table, index, sequence or view has this name.
    pub fn relation_exists(&self, name: &str) -> bool {
        self.sequences.contains_key(name)
            || self.views.contains_key(name)
            || self.tables.values().any(|t| {
                t.schema.name == name
                    || (t.schema.rowid().is_none() && t.schema.primary_key_name() == name)
                    || t.schema.index(name).is_some()
            })
    }

    /// The views that read `name` directly.
    pub fn dependent_views(&self, name: &str) -> Vec<&str> {
        self.views
            .values()
            .filter(|v| v.depends_on.iter().any(|d| d == name))
            .map(|v| v.name.as_str())
            .collect()
    }
}

/// A sequence (CREATE SEQUENCE, or behind a SERIAL/IDENTITY column). Its values are handed
/// out by meta in blocks (`MetaCommand::AllocSequence`), so no two callers anywhere in the
/// cluster ever get the same value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequenceInfo {
    pub name: String,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub start: i64,
    pub cycle: bool,
    /// Values a router takes per allocation (CACHE).
    pub cache: i64,
    /// The next value to hand out; `None` once a non-cycling sequence is exhausted.
    pub next: Option<i64>,
    /// Bumped by setval: routers drop values they took before it.
    pub generation: u64,
    /// The table and column a SERIAL/IDENTITY sequence belongs to (dropped with the table).
    pub owned_by: Option<(String, String)>,
}

impl SequenceInfo {
    /// The next `count` values (fewer at a non-cycling end) and the `next` that follows
    /// them; an error when there is none left (2200H, as PostgreSQL words it).
    pub fn take(&self, count: i64) -> Result<(Vec<i64>, Option<i64>), String> {
        let mut out = Vec::new();
        let mut next = self.next;
        while (out.len() as i64) < count.max(1) {
            let Some(v) = next else { break };
            out.push(v);
            next = v
                .checked_add(self.increment)
                .filter(|n| (self.min..=self.max).contains(n));
            if next.is_none() && self.cycle {
                next = Some(if self.increment > 0 {
                    self.min
                } else {
                    self.max
                });
            }
        }
        if out.is_empty() {
            let (which, limit) = if self.increment > 0 {
                ("maximum", self.max)
            } else {
                ("minimum", self.min)
            };
            return Err(format!(
                "nextval: reached {which} value of sequence \"{}\" ({limit})",
                self.name
            ));
        }
        Ok((out, next))
    }
}

/// A change to the cluster map, proposed through Raft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    RegisterNode(NodeInfo),
    CreateKeyspace(KeyspaceInfo),
    /// Places a keyspace's shards; ignored if the keyspace already has shards.
    PlaceShards {
        keyspace: String,
        shards: Vec<ShardInfo>,
    },
    CreateTable(TableInfo),
    DropTable {
        name: String,
    },
    /// Replaces one shard's placement (primary, replicas, epoch).
    UpdateShard(ShardInfo),
    /// Replaces a table's definition after ALTER TABLE (`name` is its name before, which
    /// differs after RENAME TO).
    AlterTable {
        name: String,
        table: TableInfo,
    },
    /// Queues shard moves (ids are assigned here); refused whole if a move names an unknown
    /// shard or node, or a shard that already has an active move.
    SubmitJobs(Vec<MoveJob>),
    /// Advances a job, and in the same entry replaces its shard's placement when `shard` is
    /// set. Refused when the job is no longer active (a second runner lost the race).
    JobStep {
        id: JobId,
        /// The phase the runner read; the step is refused if the job has moved on since.
        expect: JobPhase,
        phase: JobPhase,
        progress: crate::jobs::JobProgress,
        error: Option<String>,
        /// Placements replaced (or, for a split's new shard, added) in the same entry.
        shards: Vec<ShardInfo>,
        /// Shards removed in the same entry (a rolled-back split's new shard).
        drop_shards: Vec<ShardId>,
    },
    CreateSequence(SequenceInfo),
    DropSequence {
        name: String,
    },
    /// Takes `count` values of a sequence, if its `next` is still `expect` (the proposer
    /// computed the same block with `SequenceInfo::take`; otherwise it reads the map again
    /// and retries).
    AllocSequence {
        name: String,
        expect: Option<i64>,
        generation: u64,
        count: i64,
    },
    /// setval: the next value to hand out (`None`: exhausted).
    SetSequence {
        name: String,
        next: Option<i64>,
    },
    /// Asks the runner to roll an active job back.
    CancelJob {
        id: JobId,
    },
    /// Marks a node as being emptied (or no longer).
    SetDraining {
        node: NodeId,
        draining: bool,
    },
    /// Forgets a node; refused while any shard copy or active job still names it.
    RemoveNode {
        node: NodeId,
    },
    /// CREATE [OR REPLACE] VIEW.
    CreateView {
        view: ViewInfo,
        replace: bool,
    },
    DropView {
        name: String,
    },
    /// CREATE ROLE; the oid is assigned here (one past the largest in use).
    CreateRole(RoleInfo),
    /// ALTER ROLE: replaces the role `name` (renamed when `role.name` differs), if it still
    /// equals `previous` (what the proposer read): a change computed from a stale copy must
    /// not undo a concurrent one, such as a revoked SUPERUSER.
    AlterRole {
        name: String,
        previous: RoleInfo,
        role: RoleInfo,
    },
    DropRole {
        name: String,
    },
    /// The first superuser: applied only while no role exists, so every router of a new
    /// cluster may propose it and exactly one takes effect.
    BootstrapRole(RoleInfo),
}

impl ClusterState {
    /// Applies a command; returns an error text for a command that does not fit the state.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<(), String> {
        match cmd {
            MetaCommand::RegisterNode(node) => {
                self.nodes.insert(node.id, node.clone());
            }
            MetaCommand::CreateKeyspace(ks) => {
                if self.keyspaces.contains_key(&ks.name) {
                    return Err(format!("keyspace \"{}\" already exists", ks.name));
                }
                self.keyspaces.insert(ks.name.clone(), ks.clone());
            }
            MetaCommand::PlaceShards { keyspace, shards } => {
                if !self.keyspaces.contains_key(keyspace) {
                    return Err(format!("keyspace \"{keyspace}\" does not exist"));
                }
                if self.shards.values().any(|s| &s.keyspace == keyspace) {
                    return Ok(());
                }
                if let Some(s) = shards.iter().find(|s| self.shards.contains_key(&s.id)) {
                    return Err(format!("shard id {} is already in use", s.id));
                }
                for s in shards {
                    self.shards.insert(s.id, s.clone());
                }
            }
            MetaCommand::CreateTable(table) => {
                if self.tables.contains_key(&table.schema.name)
                    || self.views.contains_key(&table.schema.name)
                {
                    return Err(format!("relation \"{}\" already exists", table.schema.name));
                }
                self.tables.insert(table.schema.name.clone(), table.clone());
            }
            MetaCommand::DropTable { name } => {
                if !self.dependent_views(name).is_empty() {
                    return Err(format!(
                        "cannot drop table {name} because other objects depend on it"
                    ));
                }
                if self.tables.remove(name).is_none() {
                    return Err(format!("table \"{name}\" does not exist"));
                }
                // SERIAL and IDENTITY sequences go with their table.
                self.sequences
                    .retain(|_, s| s.owned_by.as_ref().is_none_or(|(t, _)| t != name));
            }
            MetaCommand::UpdateShard(shard) => {
                self.shards.insert(shard.id, shard.clone());
            }
            MetaCommand::SubmitJobs(jobs) => self.submit_jobs(jobs)?,
            MetaCommand::JobStep {
                id,
                expect,
                phase,
                progress,
                error,
                shards,
                drop_shards,
            } => {
                let job = self
                    .jobs
                    .get(id)
                    .filter(|j| j.phase.is_active() && j.phase == *expect)
                    .ok_or_else(|| format!("job {id} is not {} any more", expect.name()))?;
                // A split's first step adds its new shard: the id must still be free (the
                // placement task allocates ids too).
                if let (JobPhase::Queued, JobKind::Split { new_shard }) = (expect, job.kind)
                    && self.shards.contains_key(&new_shard)
                {
                    return Err(format!("shard id {new_shard} is already in use"));
                }
                let job = self
                    .jobs
                    .get_mut(id)
                    .ok_or_else(|| format!("job {id} vanished"))?;
                job.phase = *phase;
                job.progress = progress.clone();
                job.error = error.clone();
                for s in shards {
                    self.shards.insert(s.id, s.clone());
                }
                for id in drop_shards {
                    self.shards.remove(id);
                }
            }
            MetaCommand::CreateSequence(seq) => {
                if self.sequences.contains_key(&seq.name) || self.tables.contains_key(&seq.name) {
                    return Err(format!("relation \"{}\" already exists", seq.name));
                }
                self.sequences.insert(seq.name.clone(), seq.clone());
            }
            MetaCommand::DropSequence { name } => {
                if self.sequences.remove(name).is_none() {
                    return Err(format!("sequence \"{name}\" does not exist"));
                }
            }
            MetaCommand::AllocSequence {
                name,
                expect,
                generation,
                count,
            } => {
                let seq = self
                    .sequences
                    .get_mut(name)
                    .ok_or_else(|| format!("relation \"{name}\" does not exist"))?;
                if seq.next != *expect || seq.generation != *generation {
                    return Err(format!("sequence \"{name}\" moved on; retry"));
                }
                let (_, next) = seq.take(*count)?;
                seq.next = next;
            }
            MetaCommand::SetSequence { name, next } => {
                let seq = self
                    .sequences
                    .get_mut(name)
                    .ok_or_else(|| format!("relation \"{name}\" does not exist"))?;
                seq.next = *next;
                seq.generation += 1;
            }
            MetaCommand::CancelJob { id } => {
                let job = self
                    .jobs
                    .get_mut(id)
                    .filter(|j| j.phase.is_active())
                    .ok_or_else(|| format!("job {id} is not running"))?;
                job.cancel_requested = true;
            }
            MetaCommand::SetDraining { node, draining } => {
                if !self.nodes.contains_key(node) {
                    return Err(format!("node {node} does not exist"));
                }
                if *draining {
                    self.draining.insert(*node);
                } else {
                    self.draining.remove(node);
                }
            }
            MetaCommand::RemoveNode { node } => {
                if !self.nodes.contains_key(node) {
                    return Err(format!("node {node} does not exist"));
                }
                let copies = self.copies_on(*node);
                if copies > 0 {
                    return Err(format!(
                        "node {node} still holds {copies} shard copies; drain it first"
                    ));
                }
                if self
                    .jobs
                    .values()
                    .any(|j| j.phase.is_active() && (j.from == *node || j.to == *node))
                {
                    return Err(format!("node {node} is part of an active move"));
                }
                self.nodes.remove(node);
                self.draining.remove(node);
            }
            MetaCommand::CreateView { view, replace } => {
                let is_view = self.views.contains_key(&view.name);
                if (is_view && !replace) || (!is_view && self.relation_exists(&view.name)) {
                    return Err(format!("relation \"{}\" already exists", view.name));
                }
                if let Some(missing) = view
                    .depends_on
                    .iter()
                    .find(|d| !self.tables.contains_key(*d) && !self.views.contains_key(*d))
                {
                    return Err(format!("relation \"{missing}\" does not exist"));
                }
                self.views.insert(view.name.clone(), view.clone());
            }
            MetaCommand::CreateRole(role) => {
                if self.roles.contains_key(&role.name) {
                    return Err(format!("role \"{}\" already exists", role.name));
                }
                let oid = self
                    .roles
                    .values()
                    .map(|r| r.oid + 1)
                    .chain([FIRST_ROLE_OID, self.next_role_oid])
                    .max()
                    .unwrap_or(FIRST_ROLE_OID);
                self.next_role_oid = oid + 1;
                self.roles.insert(
                    role.name.clone(),
                    RoleInfo {
                        oid,
                        ..role.clone()
                    },
                );
            }
            MetaCommand::AlterRole {
                name,
                previous,
                role,
            } => {
                let Some(old) = self.roles.get(name) else {
                    return Err(format!("role \"{name}\" does not exist"));
                };
                if old != previous {
                    return Err(format!(
                        "role \"{name}\" was changed concurrently; run the command again"
                    ));
                }
                if *name != role.name && self.roles.contains_key(&role.name) {
                    return Err(format!("role \"{}\" already exists", role.name));
                }
                let oid = old.oid;
                self.roles.remove(name);
                self.roles.insert(
                    role.name.clone(),
                    RoleInfo {
                        oid,
                        ..role.clone()
                    },
                );
            }
            MetaCommand::DropRole { name } => {
                if self.roles.remove(name).is_none() {
                    return Err(format!("role \"{name}\" does not exist"));
                }
            }
            MetaCommand::BootstrapRole(role) => {
                if self.roles.is_empty() {
                    self.roles.insert(
                        role.name.clone(),
                        RoleInfo {
                            oid: BOOTSTRAP_ROLE_OID,
                            ..role.clone()
                        },
                    );
                }
            }
            MetaCommand::DropView { name } => {
                if !self.dependent_views(name).is_empty() {
                    return Err(format!(
                        "cannot drop view {name} because other objects depend on it"
                    ));
                }
                if self.views.remove(name).is_none() {
                    return Err(format!("view \"{name}\" does not exist"));
                }
            }
            MetaCommand::AlterTable { name, table } => {
                if !self.tables.contains_key(name) {
                    return Err(format!("table \"{name}\" does not exist"));
                }
                if *name != table.schema.name && self.tables.contains_key(&table.schema.name) {
                    return Err(format!("relation \"{}\" already exists", table.schema.name));
                }
                self.tables.remove(name);
                self.tables.insert(table.schema.name.clone(), table.clone());
                if *name != table.schema.name {
                    for s in self.sequences.values_mut() {
                        if let Some((t, _)) = &mut s.owned_by
                            && t == name
                        {
                            *t = table.schema.name.clone();
                        }
                    }
                }
            }
        }
        self.version += 1;
        Ok(())
    }

    /// The shards of a keyspace that statements are routed to, in hash-range order (a shard
    /// still being split off another is not one of them).
    pub fn keyspace_shards(&self, keyspace: &str) -> Vec<&ShardInfo> {
        let mut shards: Vec<&ShardInfo> = self
            .shards
            .values()
            .filter(|s| s.keyspace == keyspace && s.split_from.is_none())
            .collect();
        shards.sort_by_key(|s| s.range.start);
        shards
    }

    /// The shard of `keyspace` whose range holds `hash`.
    pub fn shard_for_hash(&self, keyspace: &str, hash: u64) -> Option<&ShardInfo> {
        self.shards
            .values()
            .find(|s| s.keyspace == keyspace && s.split_from.is_none() && s.range.contains(hash))
    }

    fn submit_jobs(&mut self, jobs: &[MoveJob]) -> Result<(), String> {
        let first = self.jobs.keys().next_back().map_or(1, |id| id + 1);
        let mut busy: BTreeSet<ShardId> = self
            .jobs
            .values()
            .filter(|j| j.phase.is_active())
            .map(|j| j.shard)
            .collect();
        let mut accepted = Vec::new();
        let mut next_shard = self
            .shards
            .keys()
            .copied()
            .chain(self.jobs.values().filter_map(|j| match j.kind {
                JobKind::Split { new_shard } => Some(new_shard),
                JobKind::Move => None,
            }))
            .max()
            .unwrap_or(0);
        for (id, job) in (first..).zip(jobs) {
            let shard = self
                .shards
                .get(&job.shard)
                .ok_or_else(|| format!("shard {} does not exist", job.shard))?;
            for n in [job.from, job.to] {
                if !self.nodes.contains_key(&n) {
                    return Err(format!("node {n} does not exist"));
                }
            }
            match job.kind {
                JobKind::Move => {
                    if !shard.placed_on(job.from) {
                        return Err(format!(
                            "shard {} has no copy on node {}",
                            job.shard, job.from
                        ));
                    }
                    if shard.placed_on(job.to) {
                        return Err(format!(
                            "shard {} already has a copy on node {}",
                            job.shard, job.to
                        ));
                    }
                }
                JobKind::Split { .. } => {
                    if shard.split_from.is_some() || shard.range.halves().is_none() {
                        return Err(format!("shard {} cannot be split", job.shard));
                    }
                }
            }
            if !busy.insert(job.shard) {
                return Err(format!("shard {} already has an active move", job.shard));
            }
            let mut job = job.clone();
            job.id = id;
            job.phase = JobPhase::Queued;
            if let JobKind::Split { .. } = job.kind {
                // The new shard's id: past every id in use and every split queued before.
                next_shard += 1;
                job.kind = JobKind::Split {
                    new_shard: next_shard,
                };
            }
            accepted.push(job);
        }
        for job in accepted {
            self.jobs.insert(job.id, job);
        }
        // Finished jobs are history; keep the newest few hundred.
        while self.jobs.len() > 500 {
            let Some(old) = self
                .jobs
                .values()
                .find(|j| !j.phase.is_active())
                .map(|j| j.id)
            else {
                break;
            };
            self.jobs.remove(&old);
        }
        Ok(())
    }

    /// How many shard copies (primary or replica) a node holds.
    pub fn copies_on(&self, node: NodeId) -> usize {
        self.shards.values().filter(|s| s.placed_on(node)).count()
    }

    /// The first active job, in id order: the one the runner works on.
    pub fn active_job(&self) -> Option<&MoveJob> {
        self.jobs.values().find(|j| j.phase.is_active())
    }

    pub fn node_addr(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(|n| n.addr.as_str())
    }
}
