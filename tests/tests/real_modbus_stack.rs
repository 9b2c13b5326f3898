//! Traffic produced by a real Modbus stack: a tokio-modbus client talks to a tokio-modbus server
//! through a recording proxy on loopback; the exchange is written as a capture and replayed
//! through the agent binary, which must report exactly the requests and responses that were
//! exchanged, values included. Once over Modbus/TCP on port 502, once over RTU-over-TCP on an
//! arbitrary port.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use otwatch_tests::binary;
use otwatch_tests::plc::{Plc, discrete_input, input_register, serve_tcp};
use otwatch_tests::recorder::{Endpoints, record_proxy, write_pcap};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_modbus::prelude::*;

/// What the agent's transaction log must say about one exchange.
struct Expected {
    function: &'static str,
    fields: Value,
}

fn expect(function: &'static str, fields: Value) -> Expected {
    Expected { function, fields }
}

/// Runs the client's script and returns what each exchange should look like in the log.
///
/// Report Server ID (17) goes last: over TCP, tokio-modbus 0.17's server announces its response
/// one byte short in the MBAP length (it counts `3 + data` PDU bytes for a 4-byte header), its
/// own client then fails to read it, and the connection is not usable after that.
async fn script(ctx: &mut client::Context, custom_functions: bool) -> Vec<Expected> {
    let mut out = Vec::new();
    ctx.write_single_coil(3, true).await.unwrap().unwrap();
    out.push(expect(
        "write_single_coil",
        json!({"address": 3, "quantity": 1, "write_values": [1]}),
    ));
    let coils = [true, false, true, true, false, false, true, true, true];
    ctx.write_multiple_coils(10, &coils).await.unwrap().unwrap();
    out.push(expect(
        "write_multiple_coils",
        json!({"address": 10, "quantity": 9, "write_values": [1,0,1,1,0,0,1,1,1]}),
    ));
    let read = ctx.read_coils(0, 20).await.unwrap().unwrap();
    let bits: Vec<u16> = read.iter().map(|b| u16::from(*b)).collect();
    assert_eq!(bits[3], 1);
    out.push(expect(
        "read_coils",
        json!({"address": 0, "quantity": 20, "read_values": bits}),
    ));
    ctx.read_discrete_inputs(0, 13).await.unwrap().unwrap();
    let inputs: Vec<u16> = (0..13).map(|i| u16::from(discrete_input(i))).collect();
    out.push(expect(
        "read_discrete_inputs",
        json!({"address": 0, "quantity": 13, "read_values": inputs}),
    ));
    ctx.write_single_register(100, 4242).await.unwrap().unwrap();
    out.push(expect(
        "write_single_register",
        json!({"address": 100, "write_values": [4242]}),
    ));
    ctx.write_multiple_registers(200, &[1, 2, 3, 65535])
        .await
        .unwrap()
        .unwrap();
    out.push(expect(
        "write_multiple_registers",
        json!({"address": 200, "quantity": 4, "write_values": [1, 2, 3, 65535]}),
    ));
    let regs = ctx.read_holding_registers(198, 8).await.unwrap().unwrap();
    assert_eq!(regs, vec![198, 199, 1, 2, 3, 65535, 204, 205]);
    out.push(expect(
        "read_holding_registers",
        json!({"address": 198, "quantity": 8, "read_values": regs}),
    ));
    ctx.read_input_registers(5, 4).await.unwrap().unwrap();
    let inputs: Vec<u16> = (5..9).map(input_register).collect();
    out.push(expect(
        "read_input_registers",
        json!({"address": 5, "quantity": 4, "read_values": inputs}),
    ));
    ctx.masked_write_register(100, 0x00f2, 0x0025)
        .await
        .unwrap()
        .unwrap();
    out.push(expect(
        "mask_write_register",
        json!({"address": 100, "and_mask": 0x00f2, "or_mask": 0x0025}),
    ));
    let rw = ctx
        .read_write_multiple_registers(100, 2, 300, &[9, 8])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rw, vec![151, 101]);
    out.push(expect(
        "read_write_multiple_registers",
        json!({"address": 100, "quantity": 2, "write_address": 300, "write_values": [9, 8], "read_values": [151, 101]}),
    ));
    let refused = ctx.read_holding_registers(990, 20).await.unwrap();
    assert_eq!(refused, Err(ExceptionCode::IllegalDataAddress));
    out.push(expect(
        "read_holding_registers",
        json!({"address": 990, "quantity": 20, "exception": "illegal_data_address", "exception_code": 2}),
    ));
    if custom_functions {
        // tokio-modbus's RTU client cannot frame answers to functions it does not know, so
        // only the MBAP run sends a user-defined code.
        let custom = ctx
            .call(Request::Custom(0x41, vec![1, 2, 3].into()))
            .await
            .unwrap();
        assert_eq!(custom, Err(ExceptionCode::IllegalFunction));
        out.push(expect(
            "user_defined",
            json!({"function_code": 0x41, "exception": "illegal_function"}),
        ));
    }
    let _ = ctx.call(Request::ReportServerId).await;
    out.push(expect("report_server_id", json!({"function_code": 17})));
    out
}

async fn start_tcp_server() -> SocketAddr {
    serve_tcp().await.unwrap()
}

async fn start_rtu_over_tcp_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let plc = Arc::new(Plc::default());
    let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
    tokio::spawn(async move {
        let on_connected = |stream, socket_addr| {
            let plc = plc.clone();
            async move {
                tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(
                    stream,
                    socket_addr,
                    |_| Ok(Some(plc.clone())),
                )
            }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    addr
}

fn replay_transactions(pcap: &Path) -> (Vec<Value>, Value) {
    let dir = pcap.parent().unwrap();
    let log = dir.join("transactions.jsonl");
    let summary = dir.join("summary.json");
    let out = Command::new(binary("otwatch-agent"))
        .args(["replay", "--no-progress", "--pcap"])
        .arg(pcap)
        .arg("--transactions")
        .arg(&log)
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    (records, summary)
}

fn check(records: &[Value], expected: &[Expected], unit: u8) {
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per exchange: {records:#?}"
    );
    for (record, e) in records.iter().zip(expected) {
        assert_eq!(record["function"], e.function, "{record}");
        assert_eq!(record["outcome"], "answered", "{record}");
        assert_eq!(record["unit_id"], unit, "{record}");
        for (field, value) in e.fields.as_object().unwrap() {
            assert_eq!(&record[field], value, "field {field} of {record}");
        }
    }
}

#[tokio::test]
async fn modbus_tcp_exchange_of_a_real_stack_is_decoded_exactly() {
    let server = start_tcp_server().await;
    let (proxy, recording) = record_proxy(server).await.unwrap();
    let mut ctx = tcp::connect_slave(proxy, Slave(17)).await.unwrap();
    let expected = timeout(Duration::from_secs(30), script(&mut ctx, true))
        .await
        .expect("the client's script finishes");
    let _ = ctx.disconnect().await;
    drop(ctx);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("tcp.pcap");
    let chunks = recording.lock().unwrap().clone();
    let endpoints = Endpoints {
        client: ([192, 168, 1, 10], 50000),
        server: ([192, 168, 1, 20], 502),
    };
    write_pcap(&pcap, &chunks, endpoints).unwrap();

    let (records, summary) = replay_transactions(&pcap);
    check(&records, &expected, 17);
    assert_eq!(summary["modbus"]["mbap_flows"], 1);
    // tokio-modbus's short MBAP length on Report Server ID: the PDU's byte count disagrees with
    // the bytes the header frames, and the stray last byte is left over when the stream ends.
    assert_eq!(
        summary["modbus"]["decode_errors"],
        json!({"byte_count_mismatch": 1, "truncated": 1})
    );
    // Request and response counts per function equal what the client sent.
    let requests: u64 = summary["modbus"]["requests"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(requests, expected.len() as u64);
    assert!(records.iter().all(|r| r["transaction_id"].is_u64()));
}

#[tokio::test]
async fn rtu_over_tcp_exchange_of_a_real_stack_is_decoded_on_any_port() {
    let server = start_rtu_over_tcp_server().await;
    let (proxy, recording) = record_proxy(server).await.unwrap();
    let stream = TcpStream::connect(proxy).await.unwrap();
    let mut ctx = rtu::attach_slave(stream, Slave(5));
    let expected = timeout(Duration::from_secs(30), script(&mut ctx, false))
        .await
        .expect("the client's script finishes");
    let _ = ctx.disconnect().await;
    drop(ctx);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("rtu.pcap");
    let chunks = recording.lock().unwrap().clone();
    let endpoints = Endpoints {
        client: ([192, 168, 1, 10], 50001),
        server: ([192, 168, 1, 30], 4001),
    };
    write_pcap(&pcap, &chunks, endpoints).unwrap();

    let (records, summary) = replay_transactions(&pcap);
    check(&records, &expected, 5);
    assert_eq!(summary["modbus"]["rtu_flows"], 1);
    assert_eq!(summary["modbus"]["decode_errors"], json!({}));
    assert!(records.iter().all(|r| r["encapsulation"] == "rtu"));
}

/// The policy for the real-stack exchange: reads of the low addresses, and one setpoint.
const POLICY: &str = r#"
version = 1

[[asset]]
name = "hmi"
address = "192.168.1.10"
role = "master"

[[asset]]
name = "plc"
address = "192.168.1.20"
units = [17]
role = "slave"

[[allow]]
name = "hmi reads and sets register 100"
from = "hmi"
to = "plc"
functions = ["read", "write_single_register"]
coils = "0-99"
discrete_inputs = "0-99"
holding_registers = "0-299"
input_registers = "0-99"
write_values = { min = 0, max = 5000 }
"#;

#[tokio::test]
async fn policy_and_detectors_judge_a_real_stack_exchange() {
    let server = start_tcp_server().await;
    let (proxy, recording) = record_proxy(server).await.unwrap();
    let mut ctx = tcp::connect_slave(proxy, Slave(17)).await.unwrap();
    timeout(Duration::from_secs(30), script(&mut ctx, true))
        .await
        .expect("the client's script finishes");
    let _ = ctx.disconnect().await;
    drop(ctx);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("judged.pcap");
    let policy = dir.path().join("policy.toml");
    let alerts = dir.path().join("alerts.jsonl");
    std::fs::write(&policy, POLICY).unwrap();
    let chunks = recording.lock().unwrap().clone();
    let endpoints = Endpoints {
        client: ([192, 168, 1, 10], 50000),
        server: ([192, 168, 1, 20], 502),
    };
    write_pcap(&pcap, &chunks, endpoints).unwrap();
    let out = Command::new(binary("otwatch-agent"))
        .args(["replay", "--no-progress", "--pcap"])
        .arg(&pcap)
        .arg("--policy")
        .arg(&policy)
        .arg("--alerts")
        .arg(&alerts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut occurrences = std::collections::BTreeMap::<String, u64>::new();
    for line in std::fs::read_to_string(&alerts).unwrap().lines() {
        let alert: Value = serde_json::from_str(line).unwrap();
        // The client's commands are the client's; the malformed responses are the server's.
        let actor = if alert["rule"].as_str().unwrap().starts_with("proto.") {
            "192.168.1.20"
        } else {
            "192.168.1.10"
        };
        assert_eq!(alert["src_ip"], actor, "{alert}");
        *occurrences
            .entry(alert["rule"].as_str().unwrap().to_string())
            .or_default() += alert["count"].as_u64().unwrap();
    }
    let expected: std::collections::BTreeMap<String, u64> = [
        // Coil writes (5, 15), register block writes (16, 23) and the mask write (22).
        ("policy.unauthorized_write", 5),
        // The read of 990-1009 lies outside 0-299.
        ("policy.unauthorized_read", 1),
        // User-defined 0x41 and Report Server ID.
        ("policy.unauthorized_function", 2),
        ("recon.report_server_id", 1),
        // tokio-modbus's short Report Server ID response: its byte count disagrees with the
        // framed PDU, and its stray last byte is a truncated frame when the stream ends.
        ("proto.malformed", 2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(occurrences, expected);
}
