//! Instances by DNS name: the DNS-over-HTTPS endpoint (RFC 8484) with its zone, control
//! calls and faults, and the Cloud SQL Admin API's `resolveConnectSettings`.

mod support;

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};
use support::{http, http_raw, sa_token, start_in_process_with, InProcess, RawResp as Raw};

const ADMIN_SCOPE: &str = "https://www.googleapis.com/auth/sqlservice.admin";
const TXT: QTYPE = QTYPE::TYPE(TYPE::TXT);
const CNAME: QTYPE = QTYPE::TYPE(TYPE::CNAME);

/// One request whose answer may be binary; the emulator always sends its length.
async fn raw_http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Raw {
    let raw = http_raw(method, url, headers, body).await;
    if let Some(n) = raw.header("content-length") {
        assert_eq!(raw.body.len(), n.parse::<usize>().unwrap());
    }
    raw
}

/// A query as a stub resolver sends one: RD set, one question.
fn query(id: u16, name: &str, qtype: QTYPE) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        qtype,
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.build_bytes_vec().unwrap()
}

/// One answer record, readable.
#[derive(Debug, PartialEq, Eq)]
enum Rec {
    Cname(String, String),
    /// Owner and the record's character-strings.
    Txt(String, Vec<Vec<u8>>),
}

/// What a DoH answer said.
#[derive(Debug)]
struct Answer {
    id: u16,
    rcode: RCODE,
    ra: bool,
    rd: bool,
    question: String,
    records: Vec<Rec>,
    ttls: Vec<u32>,
    max_age: Option<u32>,
}

impl Answer {
    /// The TXT values, each record's strings joined.
    fn txt(&self) -> Vec<String> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Rec::Txt(_, parts) => Some(String::from_utf8(parts.concat()).unwrap()),
                Rec::Cname(..) => None,
            })
            .collect()
    }
}

fn parse_answer(r: &Raw) -> Answer {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/dns-message"));
    let p = Packet::parse(&r.body).unwrap();
    assert!(p.has_flags(PacketFlag::RESPONSE));
    assert_eq!(p.questions.len(), 1);
    let records = p
        .answers
        .iter()
        .map(|rr| match &rr.rdata {
            RData::CNAME(c) => Rec::Cname(rr.name.to_string(), c.0.to_string()),
            RData::TXT(t) => {
                let parts = t
                    .clone()
                    .into_owned()
                    .iter_raw()
                    .map(|(k, v)| match v {
                        // iter_raw splits each string at its first '='.
                        Some(v) => [k, b"=", v].concat(),
                        None => k.to_vec(),
                    })
                    .collect();
                Rec::Txt(rr.name.to_string(), parts)
            }
            other => panic!("unexpected record {other:?}"),
        })
        .collect();
    let max_age = r
        .header("cache-control")
        .and_then(|v| v.strip_prefix("max-age="))
        .map(|v| v.parse().unwrap());
    Answer {
        id: p.id(),
        rcode: p.rcode(),
        ra: p.has_flags(PacketFlag::RECURSION_AVAILABLE),
        rd: p.has_flags(PacketFlag::RECURSION_DESIRED),
        question: p.questions[0].qname.to_string(),
        ttls: p.answers.iter().map(|rr| rr.ttl).collect(),
        records,
        max_age,
    }
}

fn doh_url(emu: &InProcess) -> String {
    emu.ready["dns_endpoint"].as_str().unwrap().to_string()
}

async fn post_query(emu: &InProcess, name: &str, qtype: QTYPE) -> Raw {
    raw_http(
        "POST",
        &doh_url(emu),
        &[
            ("Content-Type", "application/dns-message"),
            ("Accept", "application/dns-message"),
        ],
        &query(0x1234, name, qtype),
    )
    .await
}

async fn ask(emu: &InProcess, name: &str, qtype: QTYPE) -> Answer {
    parse_answer(&post_query(emu, name, qtype).await)
}

async fn control(emu: &InProcess, path: &str, body: Value) -> support::Resp {
    http(
        "POST",
        &format!("{}{path}", emu.control()),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

async fn dns_emulator() -> InProcess {
    start_in_process_with(
        &[],
        600,
        &[
            "--dns",
            "orders.example.com=my-project:us-central1:orders",
            "--dns",
            "orders.example.com=v=second",
            "--dns-cname",
            "Alias.Example.com.=chain.example.com",
            "--dns-cname",
            "chain.example.com=orders.example.com",
            "--dns-cname",
            "loop-a.example=loop-b.example",
            "--dns-cname",
            "loop-b.example=loop-a.example",
            "--dns-cname",
            "dangling.example=missing.example",
        ],
    )
    .await
}

fn s(v: &str) -> String {
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_answers_like_a_recursive_resolver() {
    let emu = dns_emulator().await;
    assert_eq!(
        doh_url(&emu),
        format!(
            "{}/dns-query",
            emu.ready["admin_endpoint"].as_str().unwrap()
        )
    );

    // POST: ID, question (its case too) and RD echoed, QR and RA set, every TXT record.
    let a = ask(&emu, "Orders.Example.COM.", TXT).await;
    assert_eq!(
        (a.id, a.rcode, a.ra, a.rd),
        (0x1234, RCODE::NoError, true, true)
    );
    assert_eq!(a.question, "Orders.Example.COM");
    assert_eq!(a.txt(), ["my-project:us-central1:orders", "v=second"]);
    assert_eq!(a.ttls, [30, 30]);
    assert_eq!(a.max_age, Some(30));

    // An EDNS query gets an OPT back.
    let plain = query(3, "orders.example.com", TXT);
    let mut edns = Packet::parse(&plain).unwrap();
    *edns.opt_mut() = Some(simple_dns::rdata::OPT {
        opt_codes: Vec::new(),
        udp_packet_size: 1232,
        version: 0,
    });
    let r = raw_http(
        "POST",
        &doh_url(&emu),
        &[("Content-Type", "application/dns-message")],
        &edns.build_bytes_vec().unwrap(),
    )
    .await;
    assert_eq!(parse_answer(&r).txt().len(), 2);
    assert!(Packet::parse(&r.body).unwrap().opt().is_some());

    // GET with base64url, no padding: the same answer.
    let q = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(query(
        7,
        "orders.example.com",
        TXT,
    ));
    let r = raw_http("GET", &format!("{}?dns={q}", doh_url(&emu)), &[], b"").await;
    let a = parse_answer(&r);
    assert_eq!((a.id, a.rcode), (7, RCODE::NoError));
    assert_eq!(a.txt(), ["my-project:us-central1:orders", "v=second"]);

    // A CNAME chain comes whole in one answer, in order, then the TXT of its end.
    let a = ask(&emu, "alias.example.com", TXT).await;
    assert_eq!(a.rcode, RCODE::NoError);
    assert_eq!(
        a.records[..2],
        [
            Rec::Cname(s("alias.example.com"), s("chain.example.com")),
            Rec::Cname(s("chain.example.com"), s("orders.example.com")),
        ]
    );
    assert_eq!(a.txt(), ["my-project:us-central1:orders", "v=second"]);
    // A CNAME query gets that name's CNAME alone.
    let a = ask(&emu, "alias.example.com", CNAME).await;
    assert_eq!(
        a.records,
        [Rec::Cname(s("alias.example.com"), s("chain.example.com"))]
    );
    assert!(ask(&emu, "orders.example.com", CNAME)
        .await
        .records
        .is_empty());

    // A loop: NOERROR with the CNAMEs walked, for the client to see the loop.
    let a = ask(&emu, "loop-a.example", TXT).await;
    assert_eq!(a.rcode, RCODE::NoError);
    assert_eq!(
        a.records,
        [
            Rec::Cname(s("loop-a.example"), s("loop-b.example")),
            Rec::Cname(s("loop-b.example"), s("loop-a.example")),
        ]
    );

    // NXDOMAIN, with the CNAMEs that led there; NODATA for another type.
    let a = ask(&emu, "nobody.example.com", TXT).await;
    assert_eq!((a.rcode, a.records.len()), (RCODE::NameError, 0));
    let a = ask(&emu, "dangling.example", TXT).await;
    assert_eq!(a.rcode, RCODE::NameError);
    assert_eq!(
        a.records,
        [Rec::Cname(s("dangling.example"), s("missing.example"))]
    );
    let a = ask(&emu, "orders.example.com", QTYPE::TYPE(TYPE::A)).await;
    assert_eq!((a.rcode, a.records.len()), (RCODE::NoError, 0));

    // Control calls: the next query sees the new records, TTL and all.
    let long = "x".repeat(300);
    let r = control(
        &emu,
        "/dns",
        json!({"name": "orders.example.com.", "txt": ["p:r:new", long], "ttl": 5}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let a = ask(&emu, "orders.example.com", TXT).await;
    assert_eq!(a.txt(), [s("p:r:new"), long.clone()]);
    let Rec::Txt(_, parts) = &a.records[1] else {
        panic!("{:?}", a.records)
    };
    assert_eq!(
        parts.iter().map(Vec::len).collect::<Vec<_>>(),
        [255, 45],
        "over 255 bytes: several character-strings of one record"
    );
    assert_eq!((a.ttls.clone(), a.max_age), (vec![5, 5], Some(5)));
    // Through the chain, the least TTL of the answer.
    assert_eq!(ask(&emu, "alias.example.com", TXT).await.max_age, Some(5));
    let zone: Value = http("GET", &format!("{}/dns", emu.control()), &[], b"")
        .await
        .json();
    assert_eq!(zone["orders.example.com"]["ttl"], 5);
    // A name that was not there, a CNAME switched, a name removed.
    control(
        &emu,
        "/dns",
        json!({"name": "new.example", "txt": ["a:b:c"]}),
    )
    .await;
    let a = ask(&emu, "new.example", TXT).await;
    assert_eq!((a.txt(), a.ttls), (vec![s("a:b:c")], vec![30]));
    control(
        &emu,
        "/dns",
        json!({"name": "alias.example.com", "cname": "new.example"}),
    )
    .await;
    assert_eq!(ask(&emu, "alias.example.com", TXT).await.txt(), ["a:b:c"]);
    control(&emu, "/dns", json!({"name": "new.example", "delete": true})).await;
    assert_eq!(ask(&emu, "new.example", TXT).await.rcode, RCODE::NameError);
    for bad in [
        json!({"name": "a..b", "txt": []}),
        json!({"name": "ok.example", "cname": "bad name"}),
        json!({"name": "ok.example", "delete": true, "txt": ["x"]}),
        json!({"txt": ["x"]}),
        json!({"name": "ok.example", "colour": "red"}),
    ] {
        let r = control(&emu, "/dns", bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }

    // What is not a single well-formed query gets 400; another media type 415.
    let url = doh_url(&emu);
    let dns_msg = [("Content-Type", "application/dns-message")];
    for body in [&b"garbage"[..], b"", &query(1, "a.example", TXT)[..5]] {
        let r = raw_http("POST", &url, &dns_msg, body).await;
        assert_eq!(r.status, 400, "{body:?}");
    }
    let mut two = Packet::new_query(1);
    for n in ["a.example", "b.example"] {
        two.questions.push(Question::new(
            Name::new_unchecked(n),
            TXT,
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
    }
    let r = raw_http("POST", &url, &dns_msg, &two.build_bytes_vec().unwrap()).await;
    assert_eq!(r.status, 400);
    let none = Packet::new_query(1).build_bytes_vec().unwrap();
    assert_eq!(raw_http("POST", &url, &dns_msg, &none).await.status, 400);
    let asked = query(1, "a.example", TXT);
    let mut reply = Packet::parse(&asked).unwrap();
    reply.set_flags(PacketFlag::RESPONSE);
    let reply = reply.build_bytes_vec().unwrap();
    assert_eq!(raw_http("POST", &url, &dns_msg, &reply).await.status, 400);
    for q in ["", "?dns=%%%", "?dns=not*base64", "?other=1", "?dns=AAAA"] {
        let r = raw_http("GET", &format!("{url}{q}"), &[], b"").await;
        assert_eq!(r.status, 400, "{q}");
    }
    let json_type = [("Content-Type", "application/json")];
    let r = raw_http("POST", &url, &json_type, &query(1, "a.example", TXT)).await;
    assert_eq!(r.status, 415);

    // Counted per name, lowercase, no trailing dot; with the types asked, in order.
    let calls = emu.calls().await;
    assert_eq!(calls["dnsQuery"]["orders.example.com"], 6, "{calls}");
    assert_eq!(calls["dnsQuery"]["alias.example.com"], 4, "{calls}");
    assert_eq!(
        calls["dnsQueryType"]["alias.example.com"],
        json!(["TXT", "CNAME", "TXT", "TXT"])
    );
    // What got 400 or 415 is no query of any name.
    assert!(calls["dnsQuery"].get("a.example").is_none(), "{calls}");
    http("POST", &format!("{}/calls/reset", emu.control()), &[], b"").await;
    assert_eq!(emu.calls().await["dnsQuery"], json!({}));
    emu.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doh_faults() {
    let emu = dns_emulator().await;
    let name = "orders.example.com";
    let fault = |answer: &str, count: Option<u32>, delay_ms: Option<u64>| json!({"name": "Orders.Example.com.", "answer": answer, "count": count, "delay_ms": delay_ms});
    let ok = |a: &Answer| a.rcode == RCODE::NoError && a.txt().len() == 2;

    for (answer, rcode) in [
        ("servfail", RCODE::ServerFailure),
        ("nxdomain", RCODE::NameError),
        ("empty", RCODE::NoError),
    ] {
        let r = control(&emu, "/dns/faults", fault(answer, Some(1), None)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Only that name.
        assert!(ask(&emu, "loop-a.example", TXT).await.records.len() == 2);
        let a = ask(&emu, name, TXT).await;
        assert_eq!(
            (a.rcode, a.records.len(), a.id),
            (rcode, 0, 0x1234),
            "{answer}"
        );
        assert!(
            ok(&ask(&emu, name, TXT).await),
            "{answer}: count 1 is one query"
        );
    }

    // Malformed: 200, a DNS media type, and no DNS message.
    control(&emu, "/dns/faults", fault("malformed", Some(1), None)).await;
    let r = post_query(&emu, name, TXT).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/dns-message"));
    assert_eq!(r.body.len(), 12);
    assert!(Packet::parse(&r.body).is_err());

    // HTTP 500 with a text, until reset (no count).
    control(&emu, "/dns/faults", fault("http-500", None, None)).await;
    for _ in 0..3 {
        let r = post_query(&emu, name, TXT).await;
        assert_eq!(r.status, 500);
        assert!(!r.body.is_empty());
    }
    let r = http("POST", &format!("{}/faults/reset", emu.control()), &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(ok(&ask(&emu, name, TXT).await));
    // The DNS-only reset too.
    control(&emu, "/dns/faults", fault("servfail", None, None)).await;
    assert_eq!(ask(&emu, name, TXT).await.rcode, RCODE::ServerFailure);
    control(&emu, "/dns/faults/reset", json!({})).await;
    assert!(ok(&ask(&emu, name, TXT).await));

    // Slow: only that query waits; others are answered meanwhile.
    let delay = Duration::from_millis(1500);
    control(&emu, "/dns/faults", fault("slow", Some(1), Some(1500))).await;
    let before = emu.calls().await["dnsQuery"][name].as_u64().unwrap();
    let started = Instant::now();
    let url = doh_url(&emu);
    let slow = tokio::spawn(async move {
        let r = raw_http(
            "POST",
            &url,
            &[("Content-Type", "application/dns-message")],
            &query(9, "orders.example.com", TXT),
        )
        .await;
        (r, started.elapsed())
    });
    // Wait until the slow query has arrived (counted), then ask for another name.
    support::eventually("the slow query is counted", || async {
        emu.calls().await["dnsQuery"][name].as_u64() == Some(before + 1)
    })
    .await;
    let a = ask(&emu, "alias.example.com", TXT).await;
    assert_eq!(a.rcode, RCODE::NoError);
    assert!(!slow.is_finished(), "another query waited for the slow one");
    let (r, took) = slow.await.unwrap();
    assert!(took >= delay, "{took:?}");
    let a = parse_answer(&r);
    assert!(ok(&a) && a.id == 9);

    // A delay with another answer.
    control(&emu, "/dns/faults", fault("servfail", Some(1), Some(200))).await;
    let started = Instant::now();
    assert_eq!(ask(&emu, name, TXT).await.rcode, RCODE::ServerFailure);
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Faults queue in order.
    control(&emu, "/dns/faults", fault("servfail", Some(1), None)).await;
    control(&emu, "/dns/faults", fault("nxdomain", Some(1), None)).await;
    assert_eq!(ask(&emu, name, TXT).await.rcode, RCODE::ServerFailure);
    assert_eq!(ask(&emu, name, TXT).await.rcode, RCODE::NameError);
    assert!(ok(&ask(&emu, name, TXT).await));

    for bad in [
        json!({"name": name, "answer": "weird"}),
        json!({"name": name, "answer": "slow"}),
        json!({"name": name, "answer": "servfail", "count": 0}),
        json!({"name": "", "answer": "servfail"}),
        json!({"answer": "servfail"}),
    ] {
        let r = control(&emu, "/dns/faults", bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    emu.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_connect_settings() {
    let emu = start_in_process_with(
        &[
            s("my-project:us-central1:psc-db,backend=127.0.0.1:1,psc=true"),
            s("my-project:europe-west1:legacy-db,backend=127.0.0.1:1,ca=legacy"),
        ],
        600,
        &[],
    )
    .await;
    let ready = emu.ready.clone();
    let admin = ready["admin_endpoint"].as_str().unwrap().to_string();
    let psc = &ready["instances"][0];
    let psc_name = psc["psc_dns_name"].as_str().unwrap().to_string();
    let cas_name = psc["dns_name"].as_str().unwrap().to_string();
    assert!(
        psc_name.ends_with(".us-central1.sql-psc.goog."),
        "{psc_name}"
    );
    assert!(cas_name.ends_with(".us-central1.sql.goog."), "{cas_name}");
    assert!(ready["instances"][1]["dns_name"].is_null());
    let token = sa_token(&ready, &[ADMIN_SCOPE]).await;
    let auth = format!("Bearer {token}");
    let url = |region: &str, name: &str| {
        format!("{admin}/sql/v1beta4/locations/{region}/dns/{name}:resolveConnectSettings")
    };
    let get = |u: String, auth: Option<String>| async move {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        http("GET", &u, &headers, b"").await
    };

    // As Google's Python connector asks: the PSC name with its trailing dot.
    let r = get(url("us-central1", &psc_name), Some(auth.clone())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"kind": "sql#connectSettings", "connectionName": "my-project:us-central1:psc-db"})
    );
    // Its sql.goog name, without the dot, in capitals, and under /v1/.
    let upper = cas_name.trim_end_matches('.').to_ascii_uppercase();
    let r = get(url("us-central1", &upper), Some(auth.clone())).await;
    assert_eq!(r.json()["connectionName"], "my-project:us-central1:psc-db");
    let v1 = format!("{admin}/v1/locations/us-central1/dns/{psc_name}:resolveConnectSettings");
    assert_eq!(get(v1, Some(auth.clone())).await.status, 200);

    // Unknown name, wrong region: Google's 404.
    for u in [
        url("us-central1", "abc.def.us-central1.sql-psc.goog."),
        url("europe-west1", &psc_name),
    ] {
        let r = get(u, Some(auth.clone())).await;
        assert_eq!(r.status, 404, "{}", r.body);
        let e = &r.json()["error"];
        assert_eq!(
            (e["code"].as_u64(), e["status"].as_str()),
            (Some(404), Some("NOT_FOUND"))
        );
        assert!(e["message"].is_string() && e["errors"].is_array(), "{e}");
    }
    // No token, an unknown one, a token without an Admin API scope.
    let r = get(url("us-central1", &psc_name), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
    let r = get(url("us-central1", &psc_name), Some(s("Bearer ya29.nope"))).await;
    assert_eq!(r.status, 401);
    let narrow = sa_token(&ready, &["https://www.googleapis.com/auth/userinfo.email"]).await;
    let r = get(
        url("us-central1", &psc_name),
        Some(format!("Bearer {narrow}")),
    )
    .await;
    assert_eq!(r.status, 403);
    // Not a GET.
    let r = http(
        "POST",
        &url("us-central1", &psc_name),
        &[("Authorization", &auth)],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 404);

    // The Admin API faults, like the other methods'.
    let r = control(
        &emu,
        "/faults",
        json!({"method": "resolveConnectSettings", "status": 503, "count": 1}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(url("us-central1", &psc_name), Some(auth.clone())).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
    assert_eq!(
        get(url("us-central1", &psc_name), Some(auth.clone()))
            .await
            .status,
        200
    );
    control(
        &emu,
        "/faults/response",
        json!({"method": "resolveConnectSettings", "mode": "drop-field", "field": "connectionName"}),
    )
    .await;
    let r = get(url("us-central1", &psc_name), Some(auth.clone())).await;
    assert_eq!(r.json(), json!({"kind": "sql#connectSettings"}));

    // Counted per name, lowercase, without the trailing dot; every call, failed ones too.
    let calls = emu.calls().await;
    let key = psc_name.trim_end_matches('.');
    assert_eq!(calls["resolveConnectSettings"][key], 9, "{calls}");
    assert_eq!(
        calls["resolveConnectSettings"][cas_name.trim_end_matches('.')],
        1
    );
    emu.running.shutdown().await;
}
