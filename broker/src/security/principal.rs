//! The principal a connection acts as: `User:ANONYMOUS` until TLS or SASL says otherwise, as
//! Kafka's default principal builder names it; a client certificate's subject goes through
//! `ssl.principal.mapping.rules` (Kafka's `SslPrincipalMapper`).

use regex::Regex;
use x509_parser::prelude::*;

pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Kafka's grammar for one rule (`SslPrincipalMapper.RULE_PATTERN`), unchanged: `DEFAULT`, or
/// `RULE:pattern/replacement/` with an optional `L` or `U`, `\` escaping `/` and `\`.
const RULE_PATTERN: &str = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)";

/// One of `ssl.principal.mapping.rules`.
#[derive(Debug)]
enum Rule {
    Default,
    Replace {
        /// The pattern as written (for messages), searched anywhere in the name for replacing...
        search: Regex,
        /// ...and anchored at both ends for the test that the rule applies (Java's `matches()`).
        whole: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// `ssl.principal.mapping.rules`, parsed at start: the first rule that applies to a certificate
/// subject names the principal. Kafka's default is `DEFAULT` (the subject unchanged).
#[derive(Debug)]
pub struct MappingRules {
    rules: Vec<Rule>,
}

impl MappingRules {
    /// Splits and parses as Kafka: comma-separated rules, blanks ignored, anything else an error
    /// that names the rule. Patterns are Rust `regex` syntax, which covers what Kafka's rules
    /// use (classes, groups, lazy quantifiers); look-arounds and back-references are refused.
    pub fn parse(value: Option<&str>) -> Result<MappingRules, String> {
        let value = value.unwrap_or("DEFAULT").trim();
        let splitter = Regex::new(&format!(r"\s*({RULE_PATTERN})\s*(,\s*|$)")).expect("Kafka's rule splitter");
        let parser = Regex::new(&format!("^(?:{RULE_PATTERN})")).expect("Kafka's rule parser");
        let mut rules = Vec::new();
        for split in splitter.captures_iter(value) {
            let text = split.get(1).map_or("", |m| m.as_str());
            let invalid = |why: String| format!("ssl.principal.mapping.rules: invalid rule `{text}`{why}");
            let parsed = parser.captures(text).ok_or_else(|| invalid(String::new()))?;
            let end = parsed.get(0).map_or(0, |m| m.end());
            if end != text.len() {
                return Err(invalid(format!(", unmatched substring: `{}`", &text[end..])));
            }
            if parsed.get(1).is_some() {
                rules.push(Rule::Default);
            } else if let Some(pattern) = parsed.get(2) {
                let pattern = pattern.as_str();
                let compile = |source: &str| Regex::new(source).map_err(|e| invalid(format!(": {e}")));
                let case = match parsed.get(6).map(|m| m.as_str()) {
                    Some("L") => Case::Lower,
                    Some("U") => Case::Upper,
                    _ => Case::Keep,
                };
                rules.push(Rule::Replace {
                    search: compile(pattern)?,
                    whole: compile(&format!("^(?:{pattern})$"))?,
                    replacement: parsed.get(4).map_or("", |m| m.as_str()).to_string(),
                    case,
                });
            } else if !text.trim().is_empty() {
                return Err(invalid(String::new()));
            }
        }
        Ok(MappingRules { rules })
    }

    /// The name the first applicable rule gives `distinguished_name`; Err when none applies
    /// (Kafka fails the connection's authentication then).
    pub fn map(&self, distinguished_name: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(distinguished_name.to_string()),
                Rule::Replace { search, whole, replacement, case } => {
                    if !whole.is_match(distinguished_name) {
                        continue;
                    }
                    let mut name = String::with_capacity(distinguished_name.len());
                    let mut last = 0;
                    for captures in search.captures_iter(distinguished_name) {
                        let matched = captures.get(0).expect("group 0 always matches");
                        name.push_str(&distinguished_name[last..matched.start()]);
                        java_replacement(replacement, &captures, &mut name);
                        last = matched.end();
                    }
                    name.push_str(&distinguished_name[last..]);
                    return Ok(match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    });
                }
            }
        }
        Err(format!("no ssl.principal.mapping.rules rule applies to {distinguished_name}"))
    }
}

impl std::fmt::Display for MappingRules {
    /// As Kafka's `SslPrincipalMapper.toString` (its tests compare that).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|rule| match rule {
                Rule::Default => "DEFAULT".to_string(),
                Rule::Replace { search, replacement, case, .. } => {
                    let case = match case {
                        Case::Keep => "",
                        Case::Lower => "/L",
                        Case::Upper => "/U",
                    };
                    format!("RULE:{}/{replacement}{case}", search.as_str())
                }
            })
            .collect();
        write!(f, "[{}]", rules.join(", "))
    }
}

/// Appends Java's `Matcher.replaceAll` replacement text for one match: `\c` is `c`, `$n` group n
/// (digits taken while the number stays a group, as Java), and, as Kafka's
/// `escapeLiteralBackReferences`, a `$n` past the last group stays literal.
fn java_replacement(replacement: &str, captures: &regex::Captures, out: &mut String) {
    let groups = captures.len() - 1;
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '$' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let first = chars.peek().and_then(|d| d.to_digit(10)).expect("a digit") as usize;
                if groups > 0 && first > groups {
                    out.push('$');
                    continue;
                }
                chars.next();
                let mut group = first;
                while let Some(more) = chars.peek().and_then(|d| d.to_digit(10)) {
                    let wider = group * 10 + more as usize;
                    if wider > groups {
                        break;
                    }
                    group = wider;
                    chars.next();
                }
                out.push_str(captures.get(group).map_or("", |m| m.as_str()));
            }
            other => out.push(other),
        }
    }
}

/// `User:<name>` for a client certificate: its subject in RFC 2253 order (last RDN first), as
/// Java's X500Principal.getName() gives it to Kafka's default principal builder, through the
/// mapping rules.
pub fn from_certificate(der: &[u8], rules: &MappingRules) -> Result<String, String> {
    Ok(format!("User:{}", rules.map(&distinguished_name(der)?)?))
}

fn distinguished_name(der: &[u8]) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("unreadable client certificate: {e}"))?;
    let registry = x509_parser::objects::oid_registry();
    let mut parts = Vec::new();
    for rdn in cert.subject().iter_rdn().collect::<Vec<_>>().into_iter().rev() {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attribute| {
                let name = x509_parser::objects::oid2abbrev(attribute.attr_type(), registry)
                    .map(str::to_string)
                    .unwrap_or_else(|_| attribute.attr_type().to_id_string());
                let value = attribute.as_str().unwrap_or("?");
                format!("{name}={}", escape_rfc2253(value))
            })
            .collect();
        parts.push(attributes.join("+"));
    }
    Ok(parts.join(","))
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') || (i == 0 && (c == '#' || c == ' '));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Kafka's own SslPrincipalMapperTest cases.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_rules() {
        for rules in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
        ] {
            MappingRules::parse(Some(rules)).unwrap_or_else(|e| panic!("{rules}: {e}"));
        }
    }

    #[test]
    fn invalid_rules() {
        for rules in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
        ] {
            assert!(MappingRules::parse(Some(rules)).is_err(), "{rules} was accepted");
        }
    }

    #[test]
    fn ssl_principal_mapper() {
        let rules = [
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
            "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
            "DEFAULT",
        ]
        .join(", ");
        let mapper = MappingRules::parse(Some(&rules)).unwrap();
        assert_eq!(mapper.map("CN=Duke,OU=ServiceUsers,O=Org,C=US").unwrap(), "duke");
        assert_eq!(mapper.map("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US").unwrap(), "duke@sme");
        assert_eq!(mapper.map("cn=duke,ou=sme,dc=mycp,dc=com").unwrap(), "DUKE@SME");
        assert_eq!(mapper.map("cN=duke,OU=JavaSoft,O=Sun Microsystems").unwrap(), "DUKE");
        assert_eq!(mapper.map("OU=JavaSoft,O=Sun Microsystems,C=US").unwrap(), "OU=JavaSoft,O=Sun Microsystems,C=US");
    }

    #[test]
    fn rules_splitting() {
        let split = |rules: &str| MappingRules::parse(Some(rules)).unwrap().to_string();
        for (expected, rules) in [
            ("[]", ""),
            ("[DEFAULT]", "DEFAULT"),
            ("[RULE:/]", "RULE://"),
            ("[RULE:/.*]", "RULE:/.*/"),
            ("[RULE:/.*/L]", "RULE:/.*/L"),
            ("[RULE:/, DEFAULT]", "RULE://,DEFAULT"),
            ("[RULE:/, DEFAULT]", "  RULE:// ,  DEFAULT  "),
            ("[RULE:   /     , DEFAULT]", "  RULE:   /     / ,  DEFAULT  "),
            ("[RULE:  /     /U, DEFAULT]", "  RULE:  /     /U   ,DEFAULT  "),
            ("[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]", "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  "),
            // Empty rules are ignored.
            ("[]", ",   , , ,      , , ,   "),
            ("[RULE:/, DEFAULT]", ",,RULE://,,,DEFAULT,,"),
            ("[RULE: /   , DEFAULT]", ",  , RULE: /   /    ,,,   DEFAULT, ,   "),
            ("[RULE:   /  /U, DEFAULT]", "     ,  , RULE:   /  /U    ,,  ,DEFAULT, ,"),
            // Escape sequences.
            (r"[RULE:\/\\\(\)\n\t/\/\/]", r"RULE:\/\\\(\)\n\t/\/\//"),
            (r"[RULE:\**\/+/*/L, RULE:\/*\**/**]", r"RULE:\**\/+/*/L,RULE:\/*\**/**/"),
            // Rules rule.
            (
                r"[RULE:,RULE:,/,RULE:,\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, RULE:, DEFAULT, /DEFAULT, DEFAULT]",
                r"RULE:,RULE:,/,RULE:,\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, /DEFAULT/,DEFAULT",
            ),
        ] {
            assert_eq!(split(rules), expected, "{rules}");
        }
    }

    #[test]
    fn comma_with_whitespace() {
        let mapper = MappingRules::parse(Some(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT")).unwrap();
        assert_eq!(mapper.map(r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz").unwrap(), r"Tkac\, Adam");
    }

    #[test]
    fn no_applicable_rule_is_an_error_and_late_back_references_stay_literal() {
        let mapper = MappingRules::parse(Some("RULE:^CN=([a-z]+),.*$/$1-$2/")).unwrap();
        assert_eq!(mapper.map("CN=alice,OU=eng").unwrap(), "alice-$2");
        assert!(mapper.map("OU=eng").is_err());
    }
}
