//! The principal a connection acts as: `User:ANONYMOUS` until TLS or SASL says otherwise, as
//! Kafka's default principal builder names it.

use x509_parser::prelude::*;

pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// `ssl.principal.mapping.rules`: only DEFAULT (the subject's distinguished name unchanged).
/// RULE:... forms need a regular expression engine: refused at start rather than ignored.
pub fn check_mapping_rules(value: Option<&str>) -> Result<(), String> {
    match value.map(str::trim) {
        None | Some("DEFAULT") | Some("") => Ok(()),
        Some(other) => Err(format!("ssl.principal.mapping.rules={other}: only DEFAULT is supported")),
    }
}

/// `User:CN=alice,OU=eng,O=example`: the certificate subject in RFC 2253 order (last RDN first),
/// as Java's X500Principal.getName() gives it to Kafka's default principal builder.
pub fn from_certificate(der: &[u8]) -> Result<String, String> {
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
    Ok(format!("User:{}", parts.join(",")))
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
