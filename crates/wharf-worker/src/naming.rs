//! Worker names: unique per process (`{hostname}-{pid}-{random}`): the consumer name in the group and the liveness record, so a restarted worker never takes a dead one's identity.

/// The name of this process, used for the liveness record.
pub fn process_name() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}{}", process_prefix(std::process::id()), &random[..6])
}

/// The start of the name of worker process `pid` on this host (`{hostname}-{pid}-`); `wharf
/// check` looks for it among the liveness records.
pub fn process_prefix(pid: u32) -> String {
    format!("{}-{pid}-", hostname())
}

/// The logged `Hostname` ([`wharf_telemetry::mozlog::hostname`]), with anything but letters,
/// digits, `-` and `.` replaced, so that a name splits on its `-`s predictably.
fn hostname() -> String {
    wharf_telemetry::mozlog::hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_process() {
        let a = process_name();
        let b = process_name();
        assert_ne!(a, b);
        assert!(a.contains(&std::process::id().to_string()));
    }
}
