//! The client request decoder on any text frame a client can send.
//!
//! Input: the frame's bytes. Checks that
//! - decoding never panics;
//! - a decoded request re-encodes (as the client does) without a panic,
//!   names its op on the wire, and decodes back to itself; forwarded to
//!   the backend as an `RpcRequest` it survives the round trip too;
//! - the error reply for a bad frame, and the `ping` reply for a good
//!   one, are JSON objects carrying the request's id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oceanchat_protocol::client::{
    decode_request, encode_request, error_frame, reply_ok, with_id, Empty, ErrorBody, ErrorCode,
};
use oceanchat_protocol::internal::{RpcContext, RpcRequest};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(request) => {
            let frame = encode_request(request.id, &request.op);
            let text = std::str::from_utf8(&frame).expect("encoded requests are UTF-8");
            assert!(
                text.contains(&format!("\"op\":\"{}\"", request.op.name())),
                "op name not on the wire: {text}"
            );
            let back = decode_request(&frame).expect("a re-encoded request decodes");
            assert_eq!(back, request, "a re-encoded request decodes differently");

            let rpc = RpcRequest {
                ctx: RpcContext {
                    gateway_id: "gw-1".into(),
                    conn_id: 1,
                    user_id: Some("u".into()),
                    session_id: None,
                },
                op: request.op,
            };
            let bytes = serde_json::to_vec(&rpc).expect("RPC requests serialize");
            let rpc_back: RpcRequest = serde_json::from_slice(&bytes).expect("RPC requests decode");
            assert_eq!(rpc_back, rpc, "an RPC request decodes differently");

            let reply = with_id(Some(request.id), &reply_ok(&Empty {}));
            assert_id(&reply, Some(request.id));
        }
        Err(error) => {
            let reply = error_frame(
                error.id,
                &ErrorBody::new(ErrorCode::BadRequest, &error.message),
            );
            assert_id(&reply, error.id);
        }
    }
});

/// `frame` is a JSON object whose `id` is `id` (or null).
fn assert_id(frame: &[u8], id: Option<u64>) {
    let value: Value = serde_json::from_slice(frame).expect("replies are JSON");
    let object = value.as_object().expect("replies are objects");
    assert_eq!(object.get("id").and_then(Value::as_u64), id, "reply id");
    assert!(
        object.get("ok").is_some_and(Value::is_boolean),
        "reply without ok"
    );
}
