//! A scripted model for the real Codex CLI: the OpenAI Responses API
//! (`POST …/responses`, server-sent events as Codex's own tests stream them)
//! on the address the agent's pods reach ([`super::git_http::pod_host`]).
//! It never reasons; it looks at the conversation it is sent:
//! - when the last input item is a tool call's output, it ends the turn with
//!   an assistant message;
//! - otherwise it asks for one edit with a tool the request offers (see
//!   [`edit_call`]): writing `CODEX.md`, or, when the conversation already
//!   holds that first edit (a resumed session), `REVISED.md`.
//!
//! Every request is kept (its body and `Authorization` header) for the test
//! to check what reached the model.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The call ids of the two edits, so a resumed conversation is recognised.
pub const DEV_CALL: &str = "call-dev-edit";
pub const REVISE_CALL: &str = "call-revise-edit";

#[derive(Clone, Debug)]
pub struct Seen {
    pub authorization: Option<String>,
    pub body: Value,
    /// What the model answered: the tool it called, or `message`.
    pub answered: String,
}

pub struct ScriptedModel {
    pub server: MockServer,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Script {
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

/// The item asking for one file to be written, with the first of the
/// request's tools that can: `apply_patch` (a custom or a function tool), or
/// a shell tool whose `command` (an argv or a script) or `cmd` runs a script.
/// Codex offers different tools by model; the request says which.
fn edit_call(tools: &[Value], call_id: &str, file: &str, line: &str) -> Value {
    let named = |name: &str| tools.iter().find(|t| t["name"] == name);
    if let Some(tool) = named("apply_patch") {
        let patch = format!("*** Begin Patch\n*** Add File: {file}\n+{line}\n*** End Patch\n");
        return if tool["type"] == "custom" {
            json!({ "type": "custom_tool_call", "name": "apply_patch", "call_id": call_id, "input": patch })
        } else {
            json!({ "type": "function_call", "name": "apply_patch", "call_id": call_id,
                    "arguments": json!({ "input": patch }).to_string() })
        };
    }
    let script = format!("printf '%s\\n' '{line}' > {file}");
    for tool in tools.iter().filter(|t| t["type"] == "function") {
        let props = &tool["parameters"]["properties"];
        let arguments = match (&props["command"]["type"], &props["cmd"]["type"]) {
            (Value::String(t), _) if t == "array" => json!({ "command": ["bash", "-lc", script] }),
            (Value::String(t), _) if t == "string" => json!({ "command": script }),
            (_, Value::String(t)) if t == "string" => json!({ "cmd": script }),
            _ => continue,
        };
        return json!({ "type": "function_call", "name": tool["name"], "call_id": call_id,
                       "arguments": arguments.to_string() });
    }
    panic!(
        "no tool to edit a file with among {:?}",
        tools.iter().map(|t| &t["name"]).collect::<Vec<_>>()
    );
}

impl Respond for Script {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let input = body["input"].as_array().cloned().unwrap_or_default();
        let tools = body["tools"].as_array().cloned().unwrap_or_default();
        let id = format!("resp-{}", self.seen.lock().unwrap().len() + 1);
        let last_is_output = input.last().is_some_and(|i| {
            i["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("_call_output"))
        });
        let item = if last_is_output {
            json!({ "type": "message", "role": "assistant", "id": format!("msg-{id}"),
                    "content": [{ "type": "output_text", "text": "Done: the change is in place." }] })
        } else if input.iter().any(|i| i["call_id"] == DEV_CALL) {
            edit_call(
                &tools,
                REVISE_CALL,
                "REVISED.md",
                "Revised by Codex in the resumed session.",
            )
        } else {
            edit_call(
                &tools,
                DEV_CALL,
                "CODEX.md",
                "Written by Codex, as the scripted model asked.",
            )
        };
        self.seen.lock().unwrap().push(Seen {
            authorization: request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            body,
            answered: item["name"].as_str().unwrap_or("message").to_string(),
        });
        let events = [
            json!({ "type": "response.created", "response": { "id": id } }),
            json!({ "type": "response.output_item.done", "item": item }),
            json!({ "type": "response.completed", "response": { "id": id, "usage": {
                "input_tokens": 0, "input_tokens_details": null, "output_tokens": 0,
                "output_tokens_details": null, "total_tokens": 0 } } }),
        ];
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/event-stream")
            .set_body_raw(sse(&events), "text/event-stream")
    }
}

impl ScriptedModel {
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind((super::git_http::pod_host(), 0)).unwrap();
        let server = MockServer::builder().listener(listener).start().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("POST"))
            .and(path_regex(r"/responses$"))
            .respond_with(Script { seen: seen.clone() })
            .mount(&server)
            .await;
        Self { server, seen }
    }

    /// The `base_url` of a Codex model provider pointing here.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Every path requested here, for a failure message.
    pub async fn paths(&self) -> Vec<String> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| format!("{} {}", r.method, r.url.path()))
            .collect()
    }
}
