//! The session's rules, driven by hand: frames in as bytes, actions out, time as plain
//! `Instant`s. No sockets, no tasks, no sleeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_domain::{
    Caller, ChatError, ConnectionId, DisconnectReason, Identity, RoomId, SenderId, Seq,
    SubscriptionKey,
};
use chat_stomp::{Command, Decoder, Frame, HeartBeat, Item, Limits, encode};

use crate::{Action, Authenticated, CloseReason, Note, SendId, Session, SessionConfig};

fn config() -> SessionConfig {
    SessionConfig {
        server_heartbeat: HeartBeat {
            can_send_ms: 10_000,
            want_receive_ms: 10_000,
        },
        heartbeat_grace: 1.5,
        limits: Limits::default(),
        connect_timeout: Duration::from_secs(5),
        instance: "test".to_owned(),
        max_sends_in_flight: 3,
        max_subscriptions: 4,
        max_subscription_id_bytes: 16,
        idle_timeout: Duration::from_secs(60),
    }
}

fn bytes(command: Command, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut frame = Frame::new(command);
    for (name, value) in headers {
        frame = frame.with_header(*name, *value);
    }
    let mut out = Vec::new();
    encode(&frame.with_body(body.as_bytes().to_vec()), &mut out);
    out
}

const MESSAGE: &str = r#"{"chatRoomId":1,"senderId":7,"senderNickname":"ann","content":"hi"}"#;

/// A session driven by hand, with what it wrote decoded back into frames.
struct Harness {
    session: Session,
    now: Instant,
    written: Decoder,
    heartbeats_written: usize,
}

impl Harness {
    fn new() -> Self {
        Self::with_upgrade_credential(None)
    }

    fn with_upgrade_credential(credential: Option<&str>) -> Self {
        let now = Instant::now();
        Self {
            session: Session::new(
                config(),
                ConnectionId(9),
                credential.map(str::to_owned),
                now,
            ),
            now,
            written: Decoder::new(Limits::default()),
            heartbeats_written: 0,
        }
    }

    fn connected() -> Self {
        let mut harness = Self::new();
        harness.input(&bytes(
            Command::Connect,
            &[("accept-version", "1.2"), ("heart-beat", "4000,4000")],
            "",
        ));
        harness.authenticate(Ok(Caller::Open), None);
        let frames = harness.frames();
        assert_eq!(frames[0].command, Command::Connected);
        harness
    }

    fn with_errors() -> Self {
        let mut harness = Self::connected();
        harness.input(&bytes(
            Command::Subscribe,
            &[("id", "e"), ("destination", "/user/queue/errors")],
            "",
        ));
        harness
    }

    /// Answers the pending Authenticate; returns the credential it asked about.
    fn authenticate(
        &mut self,
        result: Result<Caller, &str>,
        expires_in: Option<Duration>,
    ) -> Option<String> {
        let actions = self.actions();
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Write(_))),
            "nothing is written before the credential is checked"
        );
        let credential = actions.into_iter().find_map(|a| match a {
            Action::Authenticate { credential } => Some(credential),
            _ => None,
        });
        let credential = credential.expect("CONNECT asks to authenticate");
        let now = self.now;
        self.session.handle_authenticated(
            result
                .map(|caller| Authenticated {
                    caller: Arc::new(caller),
                    expires_at: expires_in.map(|d| now + d),
                })
                .map_err(str::to_owned),
            now,
        );
        credential
    }

    fn input(&mut self, data: &[u8]) {
        self.session.handle_input(data, self.now);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
    }

    /// Every action so far; the written bytes are decoded into `frames`.
    fn actions(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(action) = self.session.poll_action() {
            if let Action::Write(data) = &action {
                self.written.feed(data);
            }
            actions.push(action);
        }
        actions
    }

    fn frames(&mut self) -> Vec<Frame> {
        let _ = self.actions();
        let mut frames = Vec::new();
        while let Some(item) = self.written.next_item().expect("we write valid STOMP") {
            match item {
                Item::Frame(frame) => frames.push(frame),
                Item::HeartBeat => self.heartbeats_written += 1,
            }
        }
        frames
    }

    fn notes(&mut self) -> Vec<Note> {
        let mut notes = Vec::new();
        while let Some(note) = self.session.poll_note() {
            notes.push(note);
        }
        notes
    }
}

fn closed_with(actions: &[Action]) -> Option<CloseReason> {
    actions.iter().find_map(|a| match a {
        Action::Close(reason) => Some(*reason),
        _ => None,
    })
}

fn sends(actions: &[Action]) -> Vec<SendId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn error_codes(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.header("destination") == Some("/user/queue/errors"))
        .map(|f| {
            let body: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
            body["code"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn receipts(frames: &[Frame]) -> Vec<&str> {
    frames
        .iter()
        .filter(|f| f.command == Command::Receipt)
        .filter_map(|f| f.header("receipt-id"))
        .collect()
}

#[test]
fn connect_negotiates_the_best_version_and_names_the_session() {
    let mut h = Harness::new();
    h.input(&bytes(
        Command::Connect,
        &[("accept-version", "1.0,1.1,1.2"), ("heart-beat", "0,0")],
        "",
    ));
    h.authenticate(Ok(Caller::Open), None);
    let frames = h.frames();
    assert_eq!(frames.len(), 1);
    let connected = &frames[0];
    assert_eq!(connected.command, Command::Connected);
    assert_eq!(connected.header("version"), Some("1.2"));
    assert_eq!(connected.header("heart-beat"), Some("10000,10000"));
    assert_eq!(connected.header("session"), Some("test-9"));
    assert!(
        connected
            .header("server")
            .unwrap()
            .starts_with("chat-service/")
    );
}

#[test]
fn a_frame_before_connect_is_a_protocol_error_that_closes() {
    let mut h = Harness::new();
    h.input(&bytes(
        Command::Send,
        &[("destination", "/app/chat.sendMessage")],
        MESSAGE,
    ));
    let actions = h.actions();
    assert_eq!(closed_with(&actions), Some(CloseReason::ProtocolError));
    assert!(sends(&actions).is_empty(), "nothing is sent before CONNECT");
    let frames = h.frames();
    assert_eq!(frames[0].command, Command::Error);
    assert!(
        frames[0]
            .header("message")
            .unwrap()
            .contains("before CONNECT")
    );
    assert!(!h.session.wants_input());
}

#[test]
fn protocol_violations_answer_with_error_then_close() {
    for (frame, expected) in [
        (
            bytes(Command::Connect, &[("accept-version", "1.2")], ""),
            "twice",
        ),
        (
            bytes(Command::Begin, &[("transaction", "t")], ""),
            "transactions",
        ),
        (bytes(Command::Message, &[], ""), "server frame"),
        (
            bytes(Command::Subscribe, &[("id", "1")], ""),
            "`destination`",
        ),
        (b"NONSENSE\n\n\0".to_vec(), ""),
    ] {
        let mut h = Harness::connected();
        h.input(&frame);
        let actions = h.actions();
        assert_eq!(closed_with(&actions), Some(CloseReason::ProtocolError));
        let frames = h.frames();
        assert_eq!(frames.len(), 1, "only the ERROR");
        assert_eq!(frames[0].command, Command::Error);
        assert!(
            frames[0].header("message").unwrap().contains(expected),
            "{:?}",
            frames[0].header("message")
        );
    }
}

#[test]
fn no_common_version_or_a_bad_heart_beat_refuses_the_connect() {
    for headers in [
        vec![("accept-version", "2.0")],
        vec![("accept-version", "1.2"), ("heart-beat", "soon")],
    ] {
        let mut h = Harness::new();
        h.input(&bytes(Command::Connect, &headers, ""));
        let frames = h.frames();
        assert_eq!(frames[0].command, Command::Error);
        assert!(h.session.is_closed());
    }
}

#[test]
fn no_connect_in_time_closes_the_connection() {
    let mut h = Harness::new();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(5))
    );
    h.advance(Duration::from_secs(4));
    assert!(closed_with(&h.actions()).is_none());
    h.advance(Duration::from_secs(1));
    let actions = h.actions();
    assert_eq!(closed_with(&actions), Some(CloseReason::ProtocolError));
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn subscribing_to_a_room_asks_the_engine_and_answers_after_it() {
    let mut h = Harness::connected();
    h.input(&bytes(
        Command::Subscribe,
        &[
            ("id", "s1"),
            ("destination", "/topic/chatroom/5"),
            ("receipt", "r1"),
            ("x-resume-after", "41"),
        ],
        "",
    ));
    let actions = h.actions();
    let [
        Action::Subscribe {
            key,
            room,
            resume_after,
        },
    ] = actions.as_slice()
    else {
        panic!("expected one Subscribe, got {actions:?}");
    };
    assert_eq!(
        key,
        &SubscriptionKey {
            connection: ConnectionId(9),
            id: "s1".into()
        }
    );
    assert_eq!((*room, *resume_after), (RoomId(5), Some(Seq(41))));
    assert!(
        h.frames().is_empty(),
        "no RECEIPT before the engine answers"
    );
    h.session.handle_subscribed(Ok(()));
    assert_eq!(receipts(&h.frames()), ["r1"]);
    assert_eq!(h.session.subscription_count(), 1);
}

#[test]
fn frames_after_a_subscribe_wait_for_its_answer() {
    let mut h = Harness::connected();
    let mut both = bytes(
        Command::Subscribe,
        &[
            ("id", "s1"),
            ("destination", "/topic/chatroom/5"),
            ("receipt", "sub"),
        ],
        "",
    );
    both.extend(bytes(Command::Disconnect, &[("receipt", "bye")], ""));
    h.input(&both);
    assert!(!h.session.wants_input());
    let actions = h.actions();
    assert_eq!(
        actions.len(),
        1,
        "the DISCONNECT is not read yet: {actions:?}"
    );
    h.session.handle_subscribed(Ok(()));
    let actions = h.actions();
    assert_eq!(closed_with(&actions), Some(CloseReason::ClientClosed));
    assert_eq!(receipts(&h.frames()), ["sub", "bye"]);
}

#[test]
fn subscribe_errors_go_to_the_errors_queue_and_the_session_carries_on() {
    let mut h = Harness::with_errors();
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "e"), ("destination", "/topic/chatroom/1")],
        "",
    ));
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "x"), ("destination", "/queue/elsewhere")],
        "",
    ));
    h.input(&bytes(
        Command::Subscribe,
        &[
            ("id", "y"),
            ("destination", "/topic/chatroom/1"),
            ("x-resume-after", "-3"),
        ],
        "",
    ));
    h.input(&bytes(
        Command::Subscribe,
        &[
            ("id", "z"),
            ("destination", "/topic/chatroom/404"),
            ("receipt", "r"),
        ],
        "",
    ));
    let _ = h.actions();
    h.session
        .handle_subscribed(Err(ChatError::UnknownRoom(RoomId(404))));
    let frames = h.frames();
    assert_eq!(
        error_codes(&frames),
        [
            "DUPLICATE_SUBSCRIPTION",
            "UNKNOWN_DESTINATION",
            "INVALID_RESUME",
            "UNKNOWN_ROOM"
        ]
    );
    let last: serde_json::Value = serde_json::from_slice(&frames[3].body).unwrap();
    assert_eq!(last["receiptId"], "r");
    assert!(!h.session.is_closed());
    assert_eq!(h.session.subscription_count(), 1, "only the errors queue");
}

#[test]
fn ending_one_of_two_errors_subscriptions_keeps_errors_coming_on_the_other() {
    let mut h = Harness::with_errors();
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "e2"), ("destination", "/user/queue/errors")],
        "",
    ));
    let send_elsewhere = || bytes(Command::Send, &[("destination", "/app/elsewhere")], MESSAGE);
    // The older one ends: errors still come, on the newer.
    h.input(&bytes(Command::Unsubscribe, &[("id", "e")], ""));
    h.input(&send_elsewhere());
    let frames = h.frames();
    assert_eq!(error_codes(&frames), ["UNKNOWN_DESTINATION"]);
    assert_eq!(frames[0].header("subscription"), Some("e2"));
    // Subscribed again and the newest ended: errors fall back to the remaining one.
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "e3"), ("destination", "/user/queue/errors")],
        "",
    ));
    h.input(&bytes(Command::Unsubscribe, &[("id", "e3")], ""));
    h.input(&send_elsewhere());
    let frames = h.frames();
    assert_eq!(error_codes(&frames), ["UNKNOWN_DESTINATION"]);
    assert_eq!(frames[0].header("subscription"), Some("e2"));
    // The last one ends: errors are only counted.
    h.input(&bytes(Command::Unsubscribe, &[("id", "e2")], ""));
    h.input(&send_elsewhere());
    assert!(h.frames().is_empty());
}

#[test]
fn without_an_errors_subscription_application_errors_are_only_counted() {
    let mut h = Harness::connected();
    h.input(&bytes(
        Command::Send,
        &[("destination", "/app/elsewhere"), ("receipt", "r")],
        MESSAGE,
    ));
    assert!(h.frames().is_empty());
    assert!(h.notes().contains(&Note::Rejected("UNKNOWN_DESTINATION")));
}

#[test]
fn a_revocation_ends_that_rooms_subscriptions_and_says_why() {
    let mut h = Harness::with_errors();
    for (id, room) in [("a", "5"), ("b", "6"), ("c", "5")] {
        h.input(&bytes(
            Command::Subscribe,
            &[
                ("id", id),
                ("destination", &format!("/topic/chatroom/{room}")),
            ],
            "",
        ));
        let _ = h.actions();
        h.session.handle_subscribed(Ok(()));
    }
    assert_eq!(h.session.subscription_count(), 4);
    h.session.handle_revoked(RoomId(5));
    let actions = h.actions();
    let ended: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Unsubscribe { key, room } => {
                assert_eq!(*room, RoomId(5));
                Some(key.id.as_ref())
            }
            _ => None,
        })
        .collect();
    assert_eq!(ended, ["a", "c"]);
    assert_eq!(error_codes(&h.frames()), ["FORBIDDEN"]);
    assert_eq!(
        h.session.subscription_count(),
        2,
        "room 6 and the errors queue stay"
    );
    assert!(closed_with(&actions).is_none(), "the connection carries on");
    h.session.handle_revoked(RoomId(5));
    assert!(h.actions().is_empty(), "nothing left to end");
}

#[test]
fn unsubscribe_tells_the_engine_and_answers() {
    let mut h = Harness::connected();
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "s1"), ("destination", "/topic/chatroom/5")],
        "",
    ));
    let _ = h.actions();
    h.session.handle_subscribed(Ok(()));
    h.input(&bytes(
        Command::Unsubscribe,
        &[("id", "s1"), ("receipt", "gone")],
        "",
    ));
    let actions = h.actions();
    assert!(matches!(
        actions.first(),
        Some(Action::Unsubscribe {
            room: RoomId(5),
            ..
        })
    ));
    assert_eq!(receipts(&h.frames()), ["gone"]);
    assert_eq!(h.session.subscription_count(), 0);
}

#[test]
fn a_send_is_answered_only_after_the_service_stored_it() {
    let mut h = Harness::connected();
    h.input(&bytes(
        Command::Send,
        &[
            ("destination", "/app/chat.sendMessage"),
            ("receipt", "m1"),
            ("x-idempotency-key", "k-1"),
        ],
        MESSAGE,
    ));
    let actions = h.actions();
    let [
        Action::Send {
            id,
            request,
            idempotency_key,
            ..
        },
    ] = actions.as_slice()
    else {
        panic!("expected one Send, got {actions:?}");
    };
    assert_eq!(request.chat_room_id, Some(RoomId(1)));
    assert_eq!(idempotency_key.as_ref().map(|k| k.as_str()), Some("k-1"));
    assert!(h.frames().is_empty(), "no RECEIPT before the store answers");
    assert_eq!(h.session.sends_pending(), 1);
    h.session.handle_send_done(*id, Ok(()));
    assert_eq!(receipts(&h.frames()), ["m1"]);
    assert_eq!(h.session.sends_pending(), 0);
}

#[test]
fn answers_go_out_in_the_order_the_sends_came_in() {
    let mut h = Harness::with_errors();
    let mut three = Vec::new();
    for receipt in ["a", "b"] {
        three.extend(bytes(
            Command::Send,
            &[
                ("destination", "/app/chat.sendMessage"),
                ("receipt", receipt),
            ],
            MESSAGE,
        ));
    }
    // Invalid at once, but answered after a and b.
    three.extend(bytes(
        Command::Send,
        &[("destination", "/app/chat.sendMessage"), ("receipt", "c")],
        "{not json",
    ));
    h.input(&three);
    let ids = sends(&h.actions());
    assert_eq!(ids.len(), 2);
    h.session
        .handle_send_done(ids[1], Err(ChatError::StoreUnavailable("down".into())));
    assert!(h.frames().is_empty(), "b waits for a");
    h.session.handle_send_done(ids[0], Ok(()));
    let frames = h.frames();
    assert_eq!(frames[0].header("receipt-id"), Some("a"));
    assert_eq!(error_codes(&frames), ["STORE_UNAVAILABLE", "INVALID_JSON"]);
    let receipt_ids: Vec<_> = frames[1..]
        .iter()
        .map(|f| serde_json::from_slice::<serde_json::Value>(&f.body).unwrap()["receiptId"].clone())
        .collect();
    assert_eq!(receipt_ids, ["b", "c"]);
}

#[test]
fn sends_in_flight_are_capped_per_frame_not_per_websocket_message() {
    let mut h = Harness::connected();
    let mut five = Vec::new();
    for _ in 0..5 {
        five.extend(bytes(
            Command::Send,
            &[("destination", "/app/chat.sendMessage")],
            MESSAGE,
        ));
    }
    h.input(&five);
    let first = sends(&h.actions());
    assert_eq!(first.len(), 3, "the cap is 3");
    assert!(!h.session.wants_input(), "the driver must stop reading");
    h.session.handle_send_done(first[0], Ok(()));
    assert_eq!(
        sends(&h.actions()).len(),
        1,
        "one slot freed, one more frame read"
    );
    assert!(!h.session.wants_input());
    for id in &first[1..] {
        h.session.handle_send_done(*id, Ok(()));
    }
    assert_eq!(sends(&h.actions()).len(), 1, "the last buffered frame");
    assert!(h.session.wants_input());
}

#[test]
fn disconnect_answers_after_the_sends_before_it() {
    let mut h = Harness::connected();
    let mut data = bytes(
        Command::Send,
        &[("destination", "/app/chat.sendMessage"), ("receipt", "m")],
        MESSAGE,
    );
    data.extend(bytes(Command::Disconnect, &[("receipt", "bye")], ""));
    data.extend(bytes(
        Command::Send,
        &[("destination", "/app/chat.sendMessage")],
        MESSAGE,
    ));
    h.input(&data);
    let actions = h.actions();
    let ids = sends(&actions);
    assert_eq!(ids.len(), 1, "nothing after DISCONNECT is read");
    assert!(closed_with(&actions).is_none());
    h.session.handle_send_done(ids[0], Ok(()));
    let actions = h.actions();
    assert_eq!(closed_with(&actions), Some(CloseReason::ClientClosed));
    assert_eq!(receipts(&h.frames()), ["m", "bye"]);
}

#[test]
fn sends_under_way_are_still_answered_after_a_close() {
    let mut h = Harness::connected();
    h.input(&bytes(
        Command::Send,
        &[
            ("destination", "/app/chat.sendMessage"),
            ("receipt", "late"),
        ],
        MESSAGE,
    ));
    let ids = sends(&h.actions());
    h.input(b"GARBAGE\n\n\0");
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::ProtocolError));
    assert_eq!(h.session.sends_pending(), 1);
    h.session.handle_send_done(ids[0], Ok(()));
    let frames = h.frames();
    assert_eq!(receipts(&frames), ["late"]);
    assert_eq!(h.session.sends_pending(), 0);
}

#[test]
fn heart_beats_are_sent_when_idle_and_a_silent_client_times_out() {
    let mut h = Harness::connected();
    // Client asked for 4000,4000; server offers 10000,10000: both ways every 10 s.
    h.advance(Duration::from_secs(10));
    let _ = h.frames();
    assert_eq!(h.heartbeats_written, 1);
    h.session.handle_written(h.now);
    // Silent for 1.5 × 10 s.
    h.advance(Duration::from_secs(5));
    let actions = h.actions();
    assert_eq!(closed_with(&actions), Some(CloseReason::HeartbeatTimeout));
    let frames = h.frames();
    assert_eq!(frames[0].command, Command::Error);
}

#[test]
fn any_bytes_from_the_client_keep_it_alive() {
    let mut h = Harness::connected();
    for _ in 0..10 {
        h.now += Duration::from_secs(9);
        h.input(b"\n");
        h.session.handle_timeout(h.now);
    }
    assert!(!h.session.is_closed());
}

#[test]
fn a_client_is_not_timed_out_while_the_session_is_not_reading_it() {
    let mut h = Harness::connected();
    let mut four = Vec::new();
    for _ in 0..4 {
        four.extend(bytes(
            Command::Send,
            &[("destination", "/app/chat.sendMessage")],
            MESSAGE,
        ));
    }
    h.input(&four);
    let ids = sends(&h.actions());
    for _ in 0..6 {
        h.advance(Duration::from_secs(10));
    }
    assert!(!h.session.is_closed(), "the store is slow, not the client");
    for id in ids {
        h.session.handle_send_done(id, Ok(()));
    }
    assert!(h.session.wants_input());
}

#[test]
fn a_drain_tells_the_client_to_reconnect_after_its_delay() {
    let mut h = Harness::connected();
    h.session.handle_shutdown(Duration::from_secs(2), h.now);
    h.advance(Duration::from_secs(1));
    assert!(closed_with(&h.actions()).is_none());
    h.advance(Duration::from_secs(1));
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::ServerShutdown));
    let frames = h.frames();
    assert!(frames[0].header("message").unwrap().contains("reconnect"));
    assert_eq!(frames[0].header("x-close-reason"), Some("server_shutdown"));
}

#[test]
fn an_eviction_says_why_and_closes_as_slow_consumer() {
    for (reason, expected) in [
        (DisconnectReason::SlowConsumer, "slow consumer"),
        (
            DisconnectReason::ReplayFailed("store down".into()),
            "store down",
        ),
    ] {
        let mut h = Harness::connected();
        h.session.handle_evicted(&reason);
        assert_eq!(closed_with(&h.actions()), Some(CloseReason::SlowConsumer));
        let frames = h.frames();
        assert_eq!(frames[0].command, Command::Error);
        assert!(frames[0].header("message").unwrap().contains(expected));
        assert_eq!(frames[0].header("x-close-reason"), Some("slow_consumer"));
    }
}

#[test]
fn a_protocol_error_says_so_in_a_header_a_client_can_branch_on() {
    let mut h = Harness::connected();
    h.input(&bytes(Command::Begin, &[("transaction", "t1")], ""));
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::ProtocolError));
    let frames = h.frames();
    assert_eq!(frames[0].command, Command::Error);
    assert_eq!(frames[0].header("x-close-reason"), Some("protocol_error"));
}

#[test]
fn acks_are_accepted_and_answered() {
    let mut h = Harness::connected();
    h.input(&bytes(Command::Ack, &[("id", "1"), ("receipt", "ok")], ""));
    assert_eq!(receipts(&h.frames()), ["ok"]);
    let notes = h.notes();
    assert!(notes.contains(&Note::FrameReceived(Command::Ack)));
    assert!(notes.contains(&Note::FrameSent(Command::Receipt)));
}

fn user(id: i64) -> Caller {
    Caller::User(Identity {
        user: SenderId(id),
        nickname: Some("ann".to_owned()),
        admin: false,
    })
}

#[test]
fn the_credential_comes_from_connect_headers_else_from_the_upgrade() {
    for (headers, upgrade, expected) in [
        (
            vec![("Authorization", "Bearer abc.def")],
            Some("up"),
            Some("abc.def"),
        ),
        (vec![("authorization", "bearer  xyz")], None, Some("xyz")),
        (
            vec![("login", "u"), ("passcode", "tok")],
            Some("up"),
            Some("tok"),
        ),
        (vec![], Some("from-upgrade"), Some("from-upgrade")),
        (vec![], None, None),
    ] {
        let mut h = Harness::with_upgrade_credential(upgrade);
        let mut all = vec![("accept-version", "1.2")];
        all.extend(headers);
        h.input(&bytes(Command::Connect, &all, ""));
        let credential = h.authenticate(Ok(user(7)), None);
        assert_eq!(credential.as_deref(), expected);
        let connected = &h.frames()[0];
        assert_eq!(connected.command, Command::Connected);
        assert_eq!(connected.header("user-name"), Some("7"));
    }
}

#[test]
fn a_refused_credential_ends_in_an_error_and_nothing_after_connect_is_read() {
    let mut h = Harness::new();
    let mut data = bytes(Command::Connect, &[("accept-version", "1.2")], "");
    data.extend(bytes(
        Command::Send,
        &[("destination", "/app/chat.sendMessage")],
        MESSAGE,
    ));
    h.input(&data);
    assert!(!h.session.wants_input());
    h.authenticate(Err("the token was refused: bad signature"), None);
    let actions = h.actions();
    assert_eq!(closed_with(&actions), Some(CloseReason::Unauthenticated));
    assert!(
        sends(&actions).is_empty(),
        "the SEND after CONNECT never runs"
    );
    let frames = h.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].command, Command::Error);
    assert_eq!(
        frames[0].header("message"),
        Some("the token was refused: bad signature")
    );
}

#[test]
fn sends_carry_the_authenticated_caller() {
    let mut h = Harness::new();
    h.input(&bytes(Command::Connect, &[("accept-version", "1.2")], ""));
    h.authenticate(Ok(user(7)), None);
    h.input(&bytes(
        Command::Send,
        &[("destination", "/app/chat.sendMessage")],
        MESSAGE,
    ));
    let actions = h.actions();
    let Some(Action::Send { caller, .. }) =
        actions.iter().find(|a| matches!(a, Action::Send { .. }))
    else {
        panic!("expected a Send: {actions:?}");
    };
    assert_eq!(caller.as_ref(), &user(7));
}

#[test]
fn a_session_ends_when_its_token_expires() {
    let mut h = Harness::new();
    h.input(&bytes(Command::Connect, &[("accept-version", "1.2")], ""));
    h.authenticate(Ok(user(7)), Some(Duration::from_secs(3)));
    let _ = h.frames();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.now + Duration::from_secs(3))
    );
    h.advance(Duration::from_secs(2));
    assert!(!h.session.is_closed());
    h.advance(Duration::from_secs(1));
    assert_eq!(closed_with(&h.actions()), Some(CloseReason::TokenExpired));
    let frames = h.frames();
    assert!(frames[0].header("message").unwrap().contains("expired"));
    assert_eq!(frames[0].header("x-close-reason"), Some("token_expired"));
}

#[test]
fn subscriptions_are_capped_per_connection_and_ids_are_bounded() {
    // config(): at most 4 subscriptions (the errors queue counts) and ids of 16 bytes.
    let mut h = Harness::with_errors();
    for id in ["a", "b", "c"] {
        h.input(&bytes(
            Command::Subscribe,
            &[("id", id), ("destination", "/topic/chatroom/1")],
            "",
        ));
        let _ = h.actions();
        h.session.handle_subscribed(Ok(()));
    }
    assert_eq!(h.session.subscription_count(), 4);
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "d"), ("destination", "/topic/chatroom/2")],
        "",
    ));
    let actions = h.actions();
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Subscribe { .. })),
        "the engine is not asked"
    );
    assert_eq!(error_codes(&h.frames()), ["TOO_MANY_SUBSCRIPTIONS"]);
    h.input(&bytes(Command::Unsubscribe, &[("id", "a")], ""));
    let _ = h.frames();
    let long = "x".repeat(17);
    h.input(&bytes(
        Command::Subscribe,
        &[("id", long.as_str()), ("destination", "/topic/chatroom/2")],
        "",
    ));
    assert_eq!(error_codes(&h.frames()), ["INVALID_SUBSCRIPTION_ID"]);
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "d"), ("destination", "/topic/chatroom/2")],
        "",
    ));
    assert!(
        h.actions()
            .iter()
            .any(|a| matches!(a, Action::Subscribe { .. })),
        "room for one again after an UNSUBSCRIBE"
    );
}

#[test]
fn a_client_without_heart_beats_is_closed_after_the_idle_limit() {
    let mut h = Harness::new();
    h.input(&bytes(
        Command::Connect,
        &[("accept-version", "1.2"), ("heart-beat", "0,0")],
        "",
    ));
    h.authenticate(Ok(Caller::Open), None);
    let _ = h.frames();
    // config(): 60 s. Input at 50 s keeps it alive for another 60 s.
    h.advance(Duration::from_secs(50));
    h.input(b"\n");
    h.advance(Duration::from_secs(59));
    assert_eq!(closed_with(&h.actions()), None);
    assert!(
        h.session.poll_timeout().is_some(),
        "the idle limit is a timer"
    );
    h.advance(Duration::from_secs(1));
    let actions = h.actions();
    assert_eq!(closed_with(&actions), Some(CloseReason::IdleTimeout));
    let frames = h.frames();
    assert_eq!(frames[0].command, Command::Error);
}

#[test]
fn invalid_text_gets_an_error_and_a_close() {
    let mut h = Harness::connected();
    h.session.handle_invalid_text();
    let actions = h.actions();
    assert_eq!(closed_with(&actions), Some(CloseReason::InvalidText));
    let frames = h.frames();
    assert_eq!(frames[0].command, Command::Error);
    assert!(
        frames[0]
            .header("message")
            .is_some_and(|m| m.contains("UTF-8"))
    );
}

// --- presence, typing, read cursors ----------------------------------------------------

/// Connected in open mode with CONNECT's `login` (and `x-nickname`).
fn connected_as(login: &str, nickname: Option<&str>) -> Harness {
    let mut h = Harness::new();
    let mut headers = vec![("accept-version", "1.2"), ("login", login)];
    if let Some(nickname) = nickname {
        headers.push(("x-nickname", nickname));
    }
    h.input(&bytes(Command::Connect, &headers, ""));
    h.authenticate(Ok(Caller::Open), None);
    let _ = h.frames();
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "e"), ("destination", "/user/queue/errors")],
        "",
    ));
    h
}

fn subscribe_room(h: &mut Harness, id: &str, room: i64) -> Vec<Action> {
    h.input(&bytes(
        Command::Subscribe,
        &[
            ("id", id),
            ("destination", &format!("/topic/chatroom/{room}")),
        ],
        "",
    ));
    let _ = h.actions();
    h.session.handle_subscribed(Ok(()));
    h.actions()
}

fn member(user: i64, nickname: &str) -> crate::Member {
    crate::Member {
        user: SenderId(user),
        nickname: nickname.into(),
    }
}

#[test]
fn a_connection_enters_a_room_with_its_first_subscription_and_leaves_with_its_last() {
    let mut h = connected_as("7", Some("alice"));
    let actions = subscribe_room(&mut h, "a", 5);
    assert!(
        matches!(actions.as_slice(), [Action::Enter { room: RoomId(5), member: m }] if *m == member(7, "alice")),
        "{actions:?}"
    );
    // A second subscription to the same room is the same presence.
    let actions = subscribe_room(&mut h, "b", 5);
    assert!(!actions.iter().any(|a| matches!(a, Action::Enter { .. })));
    h.input(&bytes(Command::Unsubscribe, &[("id", "a")], ""));
    assert!(
        !h.actions()
            .iter()
            .any(|a| matches!(a, Action::Leave { .. }))
    );
    h.input(&bytes(Command::Unsubscribe, &[("id", "b")], ""));
    let actions = h.actions();
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Leave {
                room: RoomId(5),
                user: SenderId(7)
            }
        )),
        "{actions:?}"
    );
}

#[test]
fn a_closing_session_leaves_every_room_it_was_in_before_it_closes() {
    let mut h = connected_as("7", None);
    let _ = subscribe_room(&mut h, "a", 5);
    let _ = subscribe_room(&mut h, "b", 6);
    h.session.handle_client_closed();
    let actions = h.actions();
    let leaves: Vec<RoomId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Leave { room, .. } => Some(*room),
            _ => None,
        })
        .collect();
    assert_eq!(leaves, [RoomId(5), RoomId(6)]);
    assert!(matches!(actions.last(), Some(Action::Close(_))));
}

#[test]
fn an_anonymous_open_session_watches_but_is_never_present_and_cannot_type_or_read() {
    let mut h = Harness::with_errors();
    let actions = subscribe_room(&mut h, "a", 5);
    assert!(!actions.iter().any(|a| matches!(a, Action::Enter { .. })));
    // Not a number: another broker's user name, so still anonymous.
    let mut named = connected_as("guest", None);
    assert!(named.session.member().is_none());
    let _ = named.frames();

    h.input(&bytes(
        Command::Subscribe,
        &[("id", "p"), ("destination", "/topic/chatroom/5/presence")],
        "",
    ));
    let actions = h.actions();
    assert!(
        matches!(
            actions.as_slice(),
            [Action::Watch {
                topic: crate::Topic::Presence(RoomId(5)),
                ..
            }]
        ),
        "{actions:?}"
    );
    h.session.handle_subscribed(Ok(()));
    h.input(&bytes(
        Command::Send,
        &[("destination", "/app/chat.typing"), ("receipt", "t")],
        r#"{"chatRoomId":5}"#,
    ));
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "r"), ("destination", "/user/queue/read")],
        "",
    ));
    let frames = h.frames();
    assert_eq!(
        error_codes(&frames),
        ["IDENTITY_REQUIRED", "IDENTITY_REQUIRED"]
    );
}

#[test]
fn typing_and_read_sends_become_actions_answered_in_their_turn() {
    let mut h = connected_as("7", Some("alice"));
    h.input(&bytes(
        Command::Send,
        &[("destination", "/app/chat.typing"), ("receipt", "t")],
        r#"{"chatRoomId":5}"#,
    ));
    h.input(&bytes(
        Command::Send,
        &[("destination", "/app/chat.read"), ("receipt", "r")],
        r#"{"chatRoomId":5,"seq":42}"#,
    ));
    h.input(&bytes(
        Command::Send,
        &[("destination", "/app/chat.read"), ("receipt", "bad")],
        r#"{"chatRoomId":5,"seq":-1}"#,
    ));
    let actions = h.actions();
    let (typing, read) = match actions.as_slice() {
        [
            Action::Typing {
                id: t,
                member: m1,
                room: RoomId(5),
            },
            Action::Read {
                id: r,
                member: m2,
                room: RoomId(5),
                seq: Seq(42),
            },
        ] if *m1 == member(7, "alice") && *m2 == member(7, "alice") => (*t, *r),
        other => panic!("{other:?}"),
    };
    // The read is answered first; its RECEIPT still waits for the typing one.
    h.session.handle_send_done(read, Ok(()));
    assert!(receipts(&h.frames()).is_empty());
    h.session.handle_send_done(typing, Ok(()));
    let frames = h.frames();
    assert_eq!(receipts(&frames), ["t", "r"]);
    assert_eq!(error_codes(&frames), ["INVALID_SEQ"]);
}

#[test]
fn the_read_queue_is_the_users_own_and_a_revocation_ends_that_rooms_watches() {
    let mut h = Harness::new();
    h.input(&bytes(Command::Connect, &[("accept-version", "1.2")], ""));
    h.authenticate(
        Ok(Caller::User(Identity {
            user: SenderId(3),
            nickname: Some("carol".into()),
            admin: false,
        })),
        None,
    );
    let _ = h.frames();
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "r"), ("destination", "/user/queue/read")],
        "",
    ));
    let actions = h.actions();
    assert!(
        matches!(
            actions.as_slice(),
            [Action::Watch {
                topic: crate::Topic::Reads(SenderId(3)),
                ..
            }]
        ),
        "{actions:?}"
    );
    h.session.handle_subscribed(Ok(()));
    h.input(&bytes(
        Command::Subscribe,
        &[("id", "t"), ("destination", "/topic/chatroom/5/typing")],
        "",
    ));
    let _ = h.actions();
    h.session.handle_subscribed(Ok(()));
    h.session.handle_revoked(RoomId(5));
    let actions = h.actions();
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Unwatch {
                topic: crate::Topic::Typing(RoomId(5)),
                ..
            }
        )),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(
        a,
        Action::Unwatch {
            topic: crate::Topic::Reads(_),
            ..
        }
    )));
    assert_eq!(h.session.subscription_count(), 1);
}
