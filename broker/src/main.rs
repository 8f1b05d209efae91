//! The broker binary. The Kafka protocol front end arrives with the standalone broker issue.

fn main() {
    eprintln!("broker: the Kafka protocol front end is not built yet; see README.md");
    std::process::exit(2);
}
