//! A broker under test, as given on the command line: `name=bootstrap[,pid=PID[+PID...]]`.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub bootstrap: String,
    /// The broker's processes (one, or every broker of a local cluster), for CPU and memory
    /// figures read from /proc and summed over them. Empty: those figures are left out (a remote
    /// broker, say).
    pub pids: Vec<u32>,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let mut parts = text.split(',');
        let first = parts.next().unwrap_or_default();
        let (name, bootstrap) = match first.split_once('=') {
            Some((name, bootstrap)) => (name.to_string(), bootstrap.to_string()),
            None => (first.to_string(), first.to_string()),
        };
        if bootstrap.is_empty() {
            return Err(format!("target {text:?}: expected name=host:port[,pid=PID[+PID...]]"));
        }
        let mut target = Target { name, bootstrap, pids: Vec::new() };
        for part in parts {
            match part.split_once('=') {
                // pid=A+B+C: a local cluster, its brokers' CPU and memory summed.
                Some(("pid", pids)) => {
                    for pid in pids.split('+') {
                        let pid = pid.parse().map_err(|_| format!("target {text:?}: pid {pid:?} is not a number"))?;
                        target.pids.push(pid);
                    }
                }
                // A bootstrap list may itself hold commas: host1:9092,host2:9092.
                None if part.contains(':') => {
                    target.bootstrap.push(',');
                    target.bootstrap.push_str(part);
                }
                _ => return Err(format!("target {text:?}: unknown option {part:?} (only pid=PID[+PID...])")),
            }
        }
        Ok(target)
    }

    /// The target's name as it may appear inside a topic name.
    pub fn topic_safe_name(&self) -> String {
        self.name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_bootstrap_and_pid() {
        let target = Target::parse("ours=127.0.0.1:9092,pid=42").unwrap();
        assert_eq!((target.name.as_str(), target.bootstrap.as_str(), target.pids.as_slice()), ("ours", "127.0.0.1:9092", &[42][..]));
        let target = Target::parse("127.0.0.1:9093").unwrap();
        assert_eq!((target.name.as_str(), target.pids.len()), ("127.0.0.1:9093", 0));
        let target = Target::parse("kafka=h1:9092,h2:9092").unwrap();
        assert_eq!(target.bootstrap, "h1:9092,h2:9092");
        let target = Target::parse("cluster=h1:9092,h2:9092,h3:9092,pid=7+8+9").unwrap();
        assert_eq!((target.bootstrap.as_str(), target.pids.as_slice()), ("h1:9092,h2:9092,h3:9092", &[7, 8, 9][..]));
        assert!(Target::parse("x=h:1,pid=abc").is_err());
        assert!(Target::parse("x=h:1,pid=1+").is_err());
    }
}
