//! VACUUM and ANALYZE: accepted for compatibility, with nothing to do.
//!
//! A shard stores each row once in redb, which reuses freed pages itself, so there are no dead
//! tuples to vacuum; the planner keeps no statistics, so there is nothing to analyze. Tools
//! such as `pgbench -i` still send these commands, and PostgreSQL's checks still apply: the
//! named tables must exist, and VACUUM cannot run inside a transaction block (25001).
//!
//! sqlparser parses only Redshift's VACUUM, so PostgreSQL's form is read here:
//! `VACUUM [FULL] [FREEZE] [VERBOSE] [ANALYZE] [(option, ...)] [table [(column, ...)], ...]`.

use protocol::error::{Error, Result};

/// The tables a VACUUM or ANALYZE statement names, or `None` if `sql` is neither.
pub fn parse(sql: &str) -> Option<Result<(&'static str, Vec<String>)>> {
    let text = sql.trim().trim_end_matches(';').trim();
    // Every simple query passes here: look at the first word before copying anything.
    let head = text.get(..7).unwrap_or(text);
    if !["vacuum", "analyze", "analyse"].iter().any(|w| {
        head.get(..w.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(w))
    }) {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let (tag, rest) = if let Some(r) = lower.strip_prefix("vacuum") {
        ("VACUUM", r)
    } else if let Some(r) = lower
        .strip_prefix("analyze")
        .or_else(|| lower.strip_prefix("analyse"))
    {
        ("ANALYZE", r)
    } else {
        return None;
    };
    if !rest.is_empty() && !rest.starts_with(|c: char| c.is_whitespace() || c == '(') {
        return None;
    }
    Some(tables(rest).map(|t| (tag, t)))
}

fn tables(rest: &str) -> Result<Vec<String>> {
    let mut rest = rest.trim_start();
    // A parenthesised option list comes first.
    if rest.starts_with('(') {
        let end = rest
            .find(')')
            .ok_or_else(|| Error::syntax("syntax error at end of input"))?;
        rest = rest[end + 1..].trim_start();
    }
    loop {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if matches!(
            word.as_str(),
            "full" | "freeze" | "verbose" | "analyze" | "analyse"
        ) {
            rest = rest[word.len()..].trim_start();
        } else {
            break;
        }
    }
    let mut out = Vec::new();
    for part in split_top_level(rest) {
        let part = part.trim();
        if part.is_empty() {
            if rest.trim().is_empty() {
                break;
            }
            return Err(Error::syntax("syntax error at or near \",\""));
        }
        // Drop a column list; keep the last component of a qualified name.
        let name = part.split('(').next().unwrap_or("").trim();
        let name = name
            .rsplit('.')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        {
            return Err(Error::syntax(format!("syntax error at or near \"{part}\"")));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn names(sql: &str) -> Vec<String> {
        parse(sql).expect("maintenance").expect("parses").1
    }

    #[test]
    fn reads_postgres_forms() {
        assert_eq!(
            names("vacuum analyze pgbench_branches"),
            ["pgbench_branches"]
        );
        assert_eq!(names("VACUUM"), Vec::<String>::new());
        assert_eq!(
            names("VACUUM (VERBOSE, ANALYZE) a, public.b (x, y);"),
            ["a", "b"]
        );
        assert_eq!(names("ANALYZE t"), ["t"]);
        assert_eq!(
            parse("vacuum full freeze t")
                .map(|r| r.map(|x| x.0))
                .transpose()
                .ok()
                .flatten(),
            Some("VACUUM")
        );
        assert!(parse("vacuumx t").is_none());
        assert!(parse("SELECT 1").is_none());
        assert!(parse("VACUUM a b").expect("maintenance").is_err());
    }
}
