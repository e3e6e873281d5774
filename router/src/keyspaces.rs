//! `CREATE KEYSPACE`: federation from SQL.
//!
//! ```text
//!  CREATE KEYSPACE [IF NOT EXISTS] name [WITH (shards = 8, replicas = 2, nodes = '3,4')]
//! ```
//! A keyspace is a group of tables with its own shard count, copies per shard and, with
//! `nodes`, its own machines; tables join one with `CREATE TABLE … WITH (keyspace = 'name')`.
//! sqlparser has no such statement, so it is read here from sqlparser's tokens, before
//! parsing, like VACUUM (`crate::maintenance`). The work is `replication::operations::
//! create_keyspace`, shared with `tessera admin create-keyspace`.

use protocol::cluster::{KeyspaceInfo, NodeId};
use protocol::error::{Error, Result, sqlstate};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

/// A parsed CREATE KEYSPACE.
#[derive(Debug, PartialEq)]
pub struct CreateKeyspace {
    pub keyspace: KeyspaceInfo,
    pub if_not_exists: bool,
}

/// Defaults when WITH does not say: the default keyspace's shape is not known here, so a new
/// keyspace gets 4 shards of 2 copies (as `tessera dev`'s default keyspace).
const DEFAULT_SHARDS: u32 = 4;
const DEFAULT_REPLICAS: u32 = 2;

/// The statement, if `sql` is a CREATE KEYSPACE (an error if it is one, badly written).
pub fn parse(sql: &str) -> Option<Result<CreateKeyspace>> {
    let head = sql.trim_start();
    if !head
        .get(..6)
        .is_some_and(|h| h.eq_ignore_ascii_case("create"))
    {
        return None;
    }
    let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let word = |i: usize, kw: &str| matches!(tokens.get(i), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    if !(word(0, "create") && word(1, "keyspace")) {
        return None;
    }
    Some(parse_tokens(&tokens[2..]))
}

fn parse_tokens(tokens: &[Token]) -> Result<CreateKeyspace> {
    let syntax = |near: Option<&Token>| {
        Error::syntax(match near {
            Some(t) => format!("syntax error at or near \"{t}\""),
            None => "syntax error at end of input".to_string(),
        })
    };
    let mut i = 0;
    let word = |t: Option<&Token>, kw: &str| matches!(t, Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    let mut if_not_exists = false;
    if word(tokens.first(), "if") {
        if !(word(tokens.get(1), "not") && word(tokens.get(2), "exists")) {
            return Err(syntax(tokens.get(1)));
        }
        if_not_exists = true;
        i = 3;
    }
    let name = match tokens.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_some() => w.value.clone(),
        Some(Token::Word(w)) => w.value.to_lowercase(),
        t => return Err(syntax(t)),
    };
    i += 1;
    let mut keyspace = KeyspaceInfo {
        name,
        shard_count: DEFAULT_SHARDS,
        replication_factor: DEFAULT_REPLICAS,
        nodes: Vec::new(),
    };
    if word(tokens.get(i), "with") {
        i += 1;
        if tokens.get(i) != Some(&Token::LParen) {
            return Err(syntax(tokens.get(i)));
        }
        i += 1;
        loop {
            let key = match tokens.get(i) {
                Some(Token::Word(w)) => w.value.to_lowercase(),
                t => return Err(syntax(t)),
            };
            if tokens.get(i + 1) != Some(&Token::Eq) {
                return Err(syntax(tokens.get(i + 1)));
            }
            let value = match tokens.get(i + 2) {
                Some(Token::Number(n, _)) => n.clone(),
                Some(Token::SingleQuotedString(s)) => s.clone(),
                Some(Token::Word(w)) => w.value.clone(),
                t => return Err(syntax(t)),
            };
            let number = || {
                value.trim().parse::<u32>().map_err(|_| {
                    Error::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("invalid value for keyspace option \"{key}\": \"{value}\""),
                    )
                })
            };
            match key.as_str() {
                "shards" => keyspace.shard_count = number()?,
                "replicas" => keyspace.replication_factor = number()?,
                "nodes" => {
                    keyspace.nodes = value
                        .split(',')
                        .map(|n| n.trim().parse::<NodeId>())
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|_| {
                            Error::new(
                                sqlstate::INVALID_PARAMETER_VALUE,
                                format!(
                                    "nodes must be node ids separated by commas, not \"{value}\""
                                ),
                            )
                        })?;
                    keyspace.nodes.sort_unstable();
                    keyspace.nodes.dedup();
                }
                _ => {
                    return Err(Error::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!(
                            "unrecognized keyspace option \"{key}\" (shards, replicas or nodes)"
                        ),
                    ));
                }
            }
            i += 3;
            match tokens.get(i) {
                Some(Token::Comma) => i += 1,
                Some(Token::RParen) => {
                    i += 1;
                    break;
                }
                t => return Err(syntax(t)),
            }
        }
    }
    match tokens.get(i) {
        None | Some(Token::SemiColon) if tokens.len() <= i + 1 => Ok(CreateKeyspace {
            keyspace,
            if_not_exists,
        }),
        t => Err(syntax(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_statement_and_its_errors() {
        assert!(parse("SELECT 1").is_none());
        assert!(parse("CREATE TABLE t (a int)").is_none());
        let ks = parse("create keyspace IF NOT EXISTS Billing with (shards = 8, replicas = 1, nodes = '3, 4,3');")
            .unwrap()
            .unwrap();
        assert!(ks.if_not_exists);
        assert_eq!(ks.keyspace.name, "billing");
        assert_eq!(ks.keyspace.shard_count, 8);
        assert_eq!(ks.keyspace.replication_factor, 1);
        assert_eq!(ks.keyspace.nodes, vec![3, 4]);
        let plain = parse("CREATE KEYSPACE \"Logs\"").unwrap().unwrap();
        assert_eq!(plain.keyspace.name, "Logs");
        assert_eq!(plain.keyspace.shard_count, DEFAULT_SHARDS);
        for bad in [
            "CREATE KEYSPACE",
            "CREATE KEYSPACE k WITH shards = 2",
            "CREATE KEYSPACE k WITH (shards = two)",
            "CREATE KEYSPACE k WITH (color = 'red')",
            "CREATE KEYSPACE k WITH (nodes = 'a,b')",
            "CREATE KEYSPACE k extra",
        ] {
            assert!(parse(bad).unwrap().is_err(), "{bad}");
        }
    }
}
