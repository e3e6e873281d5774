//! CREATE ROLE / CREATE USER, ALTER ROLE / ALTER USER and DROP ROLE / DROP USER.
//!
//! Roles are meta state (`ClusterState.roles`, see `crate::auth` for how they log in), so a
//! role created through one router can log in through any other as soon as that router's
//! copy of the map has the entry. Privileges follow PostgreSQL's: a superuser may do anything,
//! a role with CREATEROLE may manage non-superuser roles, and any role may change its own
//! password. Tessera has no GRANT yet, so a role's attributes are all there is to a role.

use protocol::cluster::{BOOTSTRAP_ROLE_OID, ClusterState, MetaCommand, RoleInfo};
use protocol::error::{Error, Result, sqlstate};
use protocol::schema::QueryResult;
use sqlparser::ast::{self, Expr, RoleOption, Statement};

use crate::names;

/// Who runs the statement.
pub struct Actor<'a> {
    pub user: &'a str,
    /// The OID of the role the session logged in as; `None` only for a trust login on a
    /// cluster that has no role at all.
    pub oid: Option<u32>,
    /// The password_encryption setting of the session.
    pub password_encryption: &'a str,
}

/// The meta commands a role statement turns into, with its command tag; `None` for a
/// statement about something else.
pub fn plan(
    stmt: &Statement,
    state: &ClusterState,
    actor: &Actor<'_>,
) -> Option<Result<(Vec<MetaCommand>, QueryResult)>> {
    Some(match stmt {
        Statement::CreateRole(create) => create_role(create, state, actor),
        Statement::AlterRole { name, operation } => alter_role(name, operation, state, actor),
        Statement::Drop {
            object_type: ast::ObjectType::Role | ast::ObjectType::User | ast::ObjectType::Group,
            if_exists,
            names,
            ..
        } => drop_roles(names, *if_exists, state, actor),
        _ => return None,
    })
}

/// Whether the session's role, as it is now, has what `test` asks. The role is found by the
/// OID it logged in with, so a role dropped (or renamed, and its name reused) while its
/// sessions stay connected grants them nothing. Only a trust login on a cluster without any
/// role (a dev cluster before its first role) is treated as a superuser.
pub fn session_may(
    state: &ClusterState,
    oid: Option<u32>,
    test: impl Fn(&RoleInfo) -> bool,
) -> bool {
    match oid {
        Some(oid) => state.roles.values().any(|r| r.oid == oid && test(r)),
        None => state.roles.is_empty(),
    }
}

fn is_superuser(state: &ClusterState, actor: &Actor<'_>) -> bool {
    session_may(state, actor.oid, |r| r.superuser)
}

fn may_create_roles(state: &ClusterState, actor: &Actor<'_>) -> bool {
    session_may(state, actor.oid, |r| r.superuser || r.create_role)
}

/// Whether `role` is the session's own role.
fn is_self(role: &RoleInfo, actor: &Actor<'_>) -> bool {
    actor.oid == Some(role.oid)
}

fn denied(message: impl Into<String>) -> Error {
    Error::new(sqlstate::INSUFFICIENT_PRIVILEGE, message)
}

fn check_name(name: &str) -> Result<()> {
    if name.starts_with("pg_") || name == "public" || name == "none" {
        return Err(Error::new(
            "42939",
            format!("role name \"{name}\" is reserved"),
        ));
    }
    Ok(())
}

fn create_role(
    create: &ast::CreateRole,
    state: &ClusterState,
    actor: &Actor<'_>,
) -> Result<(Vec<MetaCommand>, QueryResult)> {
    let mut commands = Vec::new();
    for name in &create.names {
        let name = names::table_name(name);
        check_name(&name)?;
        if !may_create_roles(state, actor) {
            return Err(denied("permission denied to create role"));
        }
        if state.roles.contains_key(&name) {
            if create.if_not_exists {
                continue;
            }
            return Err(Error::new(
                sqlstate::DUPLICATE_OBJECT,
                format!("role \"{name}\" already exists"),
            ));
        }
        let mut role = RoleInfo {
            name: name.clone(),
            oid: 0,
            superuser: false,
            create_role: false,
            create_db: false,
            can_login: false,
            inherit: true,
            replication: false,
            bypass_rls: false,
            conn_limit: -1,
            password: None,
            valid_until: None,
        };
        let mut options = Vec::new();
        let flags = [
            (create.login, RoleOption::Login as fn(bool) -> RoleOption),
            (create.superuser, RoleOption::SuperUser),
            (create.create_db, RoleOption::CreateDB),
            (create.create_role, RoleOption::CreateRole),
            (create.inherit, RoleOption::Inherit),
            (create.replication, RoleOption::Replication),
            (create.bypassrls, RoleOption::BypassRLS),
        ];
        for (flag, option) in flags {
            if let Some(b) = flag {
                options.push(option(b));
            }
        }
        if let Some(p) = &create.password {
            options.push(RoleOption::Password(p.clone()));
        }
        if let Some(e) = &create.connection_limit {
            options.push(RoleOption::ConnectionLimit(e.clone()));
        }
        if let Some(e) = &create.valid_until {
            options.push(RoleOption::ValidUntil(e.clone()));
        }
        if !create.in_role.is_empty()
            || !create.in_group.is_empty()
            || !create.role.is_empty()
            || !create.user.is_empty()
            || !create.admin.is_empty()
        {
            return Err(Error::unsupported(
                "role membership (IN ROLE, ROLE, ADMIN) is not supported",
            ));
        }
        apply_options(&mut role, &options, actor, is_superuser(state, actor), true)?;
        commands.push(MetaCommand::CreateRole(role));
    }
    Ok((commands, QueryResult::command("CREATE ROLE", 0)))
}

/// Applies role options; only a superuser may grant SUPERUSER, REPLICATION or BYPASSRLS.
fn apply_options(
    role: &mut RoleInfo,
    options: &[RoleOption],
    actor: &Actor<'_>,
    actor_is_superuser: bool,
    creating: bool,
) -> Result<()> {
    for option in options {
        match option {
            RoleOption::SuperUser(_) | RoleOption::Replication(_) | RoleOption::BypassRLS(_)
                if !actor_is_superuser =>
            {
                // PostgreSQL 15's messages.
                return Err(denied(match (option, creating) {
                    (RoleOption::SuperUser(_), true) => "must be superuser to create superusers",
                    (RoleOption::SuperUser(_), false) => {
                        "must be superuser to alter superuser roles or change superuser attribute"
                    }
                    (RoleOption::Replication(_), true) => {
                        "must be superuser to create replication users"
                    }
                    (RoleOption::Replication(_), false) => {
                        "must be superuser to alter replication roles or change replication attribute"
                    }
                    (_, true) => "must be superuser to create bypassrls users",
                    (_, false) => "must be superuser to change bypassrls attribute",
                }));
            }
            RoleOption::SuperUser(b) => role.superuser = *b,
            RoleOption::Replication(b) => role.replication = *b,
            RoleOption::BypassRLS(b) => role.bypass_rls = *b,
            RoleOption::Login(b) => role.can_login = *b,
            RoleOption::CreateDB(b) => role.create_db = *b,
            RoleOption::CreateRole(b) => role.create_role = *b,
            RoleOption::Inherit(b) => role.inherit = *b,
            RoleOption::Password(ast::Password::NullPassword) => role.password = None,
            RoleOption::Password(ast::Password::Password(e)) => {
                role.password = match string_of(e)? {
                    // PostgreSQL: an empty password clears it (with a NOTICE).
                    Some(p) if p.is_empty() => None,
                    Some(p) => Some(crate::auth::encrypt_password(
                        &role.name,
                        &p,
                        actor.password_encryption,
                    )),
                    None => None,
                };
            }
            RoleOption::ConnectionLimit(e) => {
                role.conn_limit = match e {
                    Expr::Value(v) => match &v.value {
                        ast::Value::Number(n, _) => n.parse::<i32>().ok(),
                        _ => None,
                    },
                    Expr::UnaryOp {
                        op: ast::UnaryOperator::Minus,
                        expr,
                    } => match expr.as_ref() {
                        Expr::Value(v) => match &v.value {
                            ast::Value::Number(n, _) => n.parse::<i32>().ok().map(|n| -n),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => None,
                }
                .filter(|n| *n >= -1)
                .ok_or_else(|| {
                    Error::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("invalid connection limit: {e}"),
                    )
                })?;
            }
            RoleOption::ValidUntil(e) => role.valid_until = string_of(e)?,
        }
    }
    Ok(())
}

/// A string literal (or NULL) option value.
fn string_of(e: &Expr) -> Result<Option<String>> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s)
            | ast::Value::EscapedStringLiteral(s)
            | ast::Value::DollarQuotedString(ast::DollarQuotedString { value: s, .. }) => {
                Ok(Some(s.clone()))
            }
            ast::Value::Null => Ok(None),
            _ => Err(Error::syntax(format!("syntax error at or near \"{e}\""))),
        },
        _ => Err(Error::syntax(format!("syntax error at or near \"{e}\""))),
    }
}

fn alter_role(
    name: &ast::Ident,
    operation: &ast::AlterRoleOperation,
    state: &ClusterState,
    actor: &Actor<'_>,
) -> Result<(Vec<MetaCommand>, QueryResult)> {
    let name = names::ident(name);
    let old = state.roles.get(&name).ok_or_else(|| {
        Error::new(
            sqlstate::UNDEFINED_OBJECT,
            format!("role \"{name}\" does not exist"),
        )
    })?;
    let superuser = is_superuser(state, actor);
    let mut role = old.clone();
    match operation {
        ast::AlterRoleOperation::RenameRole { role_name } => {
            let new = names::ident(role_name);
            check_name(&new)?;
            if is_self(old, actor) {
                return Err(Error::unsupported("session user cannot be renamed"));
            }
            if !(superuser || (!old.superuser && may_create_roles(state, actor))) {
                return Err(denied("permission denied to rename role"));
            }
            if state.roles.contains_key(&new) {
                return Err(Error::new(
                    sqlstate::DUPLICATE_OBJECT,
                    format!("role \"{new}\" already exists"),
                ));
            }
            role.name = new;
            // An md5 hash is salted with the role name, so it no longer matches: PostgreSQL
            // clears it too.
            if role
                .password
                .as_deref()
                .is_some_and(|p| p.starts_with("md5"))
            {
                role.password = None;
            }
            Ok(altered(name, old, role))
        }
        ast::AlterRoleOperation::WithOptions { options } => {
            let own_password_only =
                is_self(old, actor) && options.iter().all(|o| matches!(o, RoleOption::Password(_)));
            let allowed = superuser
                || own_password_only
                || (!old.superuser && may_create_roles(state, actor));
            if !allowed {
                return Err(denied("permission denied to alter role"));
            }
            apply_options(&mut role, options, actor, superuser, false)?;
            if is_self(old, actor)
                && old.superuser
                && !role.superuser
                && old.oid == BOOTSTRAP_ROLE_OID
            {
                return Err(Error::unsupported(
                    "the bootstrap superuser must remain a superuser",
                ));
            }
            Ok(altered(name, old, role))
        }
        _ => Err(Error::unsupported(
            "ALTER ROLE supports RENAME TO and role options (LOGIN, PASSWORD, SUPERUSER, …)",
        )),
    }
}

/// The meta command of an ALTER ROLE: `role` replaces `old`, if `old` is still current.
fn altered(name: String, old: &RoleInfo, role: RoleInfo) -> (Vec<MetaCommand>, QueryResult) {
    (
        vec![MetaCommand::AlterRole {
            name,
            previous: old.clone(),
            role,
        }],
        QueryResult::command("ALTER ROLE", 0),
    )
}

fn drop_roles(
    targets: &[ast::ObjectName],
    if_exists: bool,
    state: &ClusterState,
    actor: &Actor<'_>,
) -> Result<(Vec<MetaCommand>, QueryResult)> {
    let superuser = is_superuser(state, actor);
    let mut commands = Vec::new();
    for target in targets {
        let name = names::table_name(target);
        let Some(role) = state.roles.get(&name) else {
            if if_exists {
                continue;
            }
            return Err(Error::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("role \"{name}\" does not exist"),
            ));
        };
        if is_self(role, actor) {
            return Err(Error::new("55006", "current user cannot be dropped"));
        }
        if role.oid == BOOTSTRAP_ROLE_OID {
            return Err(Error::new(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!("cannot drop role {name} because it is required by the database system"),
            ));
        }
        if !(superuser || (!role.superuser && may_create_roles(state, actor))) {
            return Err(denied("permission denied to drop role"));
        }
        commands.push(MetaCommand::DropRole { name });
    }
    Ok((commands, QueryResult::command("DROP ROLE", 0)))
}
