//! Sorting the server's text frames into replies and events, without I/O.
//!
//! Every frame from the server is one JSON object: a reply has an `ok`
//! field (and an `id`, which is `null` for a frame the server could not
//! read), an event has an `ev` field. [`classify`] tells them apart so the
//! connection's reader task can route a reply to the request waiting for
//! its id and an event to the event queue.

use oceanchat_protocol::client::{ErrorBody, Event};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The fields of an `ok: true` reply, without `id` and `ok`.
pub type ReplyFields = Map<String, Value>;

/// A reply's outcome: its result fields, or the server's error.
pub type Reply = Result<ReplyFields, ErrorBody>;

/// What one server frame is.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A reply; `id` is `None` when the server answered a frame it could
    /// not read (`"id": null`).
    Reply { id: Option<u64>, reply: Reply },
    /// An event this crate knows the type of.
    Event(Event),
    /// Valid JSON that is neither a well-formed reply nor a known event (an
    /// event newer than this crate, say). Kept whole so a caller can look.
    Other(Value),
}

/// Why a frame could not be classified at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("server frame is not a JSON object: {0}")]
pub struct FrameError(String);

/// Sorts one text frame from the server.
pub fn classify(text: &str) -> Result<Frame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError(e.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(FrameError(format!("got {text:.80}")));
    };
    if fields.contains_key("ev") {
        // Decoded from the parsed value by reference, not from a copy.
        let value = Value::Object(fields);
        return Ok(match Event::deserialize(&value) {
            Ok(event) => Frame::Event(event),
            Err(_) => Frame::Other(value),
        });
    }
    let ok = fields.get("ok").and_then(Value::as_bool);
    let id = match fields.get("id") {
        Some(Value::Null) => Some(None),
        Some(v) => v.as_u64().map(Some),
        None => None,
    };
    let (Some(ok), Some(id)) = (ok, id) else {
        return Ok(Frame::Other(Value::Object(fields)));
    };
    if !ok {
        let error = fields
            .get("error")
            .and_then(|e| ErrorBody::deserialize(e).ok());
        return Ok(match error {
            Some(error) => Frame::Reply {
                id,
                reply: Err(error),
            },
            None => Frame::Other(Value::Object(fields)),
        });
    }
    fields.remove("id");
    fields.remove("ok");
    Ok(Frame::Reply {
        id,
        reply: Ok(fields),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oceanchat_protocol::client::{ErrorCode, Message};
    use serde_json::json;

    #[test]
    fn ok_reply_keeps_only_result_fields() {
        let frame = classify(r#"{"id":7,"ok":true,"conv":"dm:a:b"}"#).unwrap();
        let mut fields = Map::new();
        fields.insert("conv".into(), json!("dm:a:b"));
        assert_eq!(
            frame,
            Frame::Reply {
                id: Some(7),
                reply: Ok(fields)
            }
        );
    }

    #[test]
    fn empty_ok_reply() {
        let frame = classify(r#"{"id":1,"ok":true}"#).unwrap();
        assert_eq!(
            frame,
            Frame::Reply {
                id: Some(1),
                reply: Ok(Map::new())
            }
        );
    }

    #[test]
    fn error_reply_with_details() {
        let frame = classify(
            r#"{"id":3,"ok":false,"error":{"code":"locked","message":"held","holder":{"user_id":"u"}}}"#,
        )
        .unwrap();
        let Frame::Reply {
            id: Some(3),
            reply: Err(error),
        } = frame
        else {
            panic!("not an error reply: {frame:?}");
        };
        assert_eq!(error.code, ErrorCode::Locked);
        assert_eq!(error.message, "held");
        assert_eq!(error.details["holder"], json!({"user_id": "u"}));
    }

    #[test]
    fn null_id_error_reply() {
        let frame =
            classify(r#"{"id":null,"ok":false,"error":{"code":"bad_request","message":"x"}}"#)
                .unwrap();
        assert_eq!(
            frame,
            Frame::Reply {
                id: None,
                reply: Err(ErrorBody::new(ErrorCode::BadRequest, "x"))
            }
        );
    }

    #[test]
    fn msg_event() {
        let frame = classify(
            r#"{"ev":"msg","conv":"g:1","seq":2,"msg_id":"m","from":"u","ts":5,"body":"hi","client_msg_id":"c"}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            Frame::Event(Event::Msg(Message {
                conv: "g:1".into(),
                seq: 2,
                msg_id: "m".into(),
                from: "u".into(),
                ts: 5,
                body: "hi".into(),
                client_msg_id: "c".into(),
            }))
        );
    }

    #[test]
    fn unknown_event_is_kept_whole() {
        let text = r#"{"ev":"from_a_newer_server","conv":"g:1"}"#;
        let frame = classify(text).unwrap();
        assert_eq!(frame, Frame::Other(serde_json::from_str(text).unwrap()));
    }

    #[test]
    fn odd_replies_are_kept_whole() {
        // An unknown error code, a missing `ok`, a string id.
        for text in [
            r#"{"id":1,"ok":false,"error":{"code":"no_such_code","message":"x"}}"#,
            r#"{"id":1,"conv":"x"}"#,
            r#"{"id":"1","ok":true}"#,
        ] {
            let frame = classify(text).unwrap();
            assert_eq!(
                frame,
                Frame::Other(serde_json::from_str(text).unwrap()),
                "{text}"
            );
        }
    }

    #[test]
    fn non_objects_are_errors() {
        assert!(classify("not json").is_err());
        assert!(classify("[1,2]").is_err());
    }
}
