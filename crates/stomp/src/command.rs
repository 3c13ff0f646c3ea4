//! The closed set of STOMP 1.2 commands, and the one rule that depends on the command alone:
//! whether its headers are escaped.

use std::fmt;

/// A STOMP command: the first line of every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client opens a session (the STOMP 1.0 spelling).
    Connect,
    /// Client opens a session (the STOMP 1.2 spelling; same meaning as `CONNECT`).
    Stomp,
    /// Server accepts a session.
    Connected,
    /// Client sends a message to a destination.
    Send,
    /// Client subscribes to a destination.
    Subscribe,
    /// Client cancels a subscription.
    Unsubscribe,
    /// Client acknowledges a message.
    Ack,
    /// Client rejects a message.
    Nack,
    /// Client starts a transaction.
    Begin,
    /// Client commits a transaction.
    Commit,
    /// Client rolls back a transaction.
    Abort,
    /// Client ends the session gracefully.
    Disconnect,
    /// Server delivers a message to a subscription.
    Message,
    /// Server confirms a frame that carried a `receipt` header.
    Receipt,
    /// Server reports a protocol error; the connection closes after it.
    Error,
}

impl Command {
    /// Every command, in no particular order.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// Length of the longest command name (`UNSUBSCRIBE`): a command
    /// line longer than this cannot be valid, so the decoder rejects it without waiting for
    /// its end.
    pub(crate) const LONGEST_NAME_BYTES: usize = 11;

    /// The command as it appears on the wire, e.g. `"SEND"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// The command whose wire name is exactly `name` (commands are case-sensitive).
    pub(crate) fn from_wire(name: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|command| command.as_str().as_bytes() == name)
    }

    /// STOMP 1.2 escapes header names and values in every frame except `CONNECT` and
    /// `CONNECTED`, so that 1.0 peers, which know no escaping, can still negotiate a version.
    pub(crate) fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips_through_its_wire_name() {
        for command in Command::ALL {
            assert_eq!(
                Command::from_wire(command.as_str().as_bytes()),
                Some(command)
            );
            assert!(command.as_str().len() <= Command::LONGEST_NAME_BYTES);
        }
    }

    #[test]
    fn command_names_are_case_sensitive() {
        assert_eq!(Command::from_wire(b"send"), None);
        assert_eq!(Command::from_wire(b"SEND "), None);
    }

    #[test]
    fn only_connect_and_connected_skip_header_escaping() {
        let unescaped: Vec<Command> = Command::ALL
            .into_iter()
            .filter(|command| !command.escapes_headers())
            .collect();
        assert_eq!(unescaped, [Command::Connect, Command::Connected]);
    }
}
