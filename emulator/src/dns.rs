//! The zone and answers of the DNS-over-HTTPS endpoint (RFC 8484, `/dns-query` on the
//! admin server, its HTTP side in `doh`): a stand-in for a public
//! recursive resolver such as `dns.google`, so that connectors that find an instance by a
//! DNS name (a TXT record holding `project:region:instance`, possibly behind CNAMEs) can be
//! tested offline. The zone is a map of names to TXT strings, an optional CNAME and a TTL,
//! set from the command line, the config file and the control endpoint; faults per name
//! (SERVFAIL, NXDOMAIN, an empty answer, a malformed message, a delay, HTTP 500) test a
//! client's error paths.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use simple_dns::rdata::{RData, CNAME, OPT, TXT};
use simple_dns::{
    CharacterString, Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QTYPE, RCODE, TYPE,
};

/// Where the DoH endpoint is served on the admin server.
pub const DOH_PATH: &str = "/dns-query";
/// The media type of DoH queries and answers.
pub const DNS_MESSAGE: &str = "application/dns-message";
/// A name's TTL when none is given, in seconds.
pub const DEFAULT_TTL: u32 = 30;
/// How many CNAMEs the resolver follows for one query before it stops.
pub const MAX_CNAME_HOPS: usize = 16;
/// The longest TXT value a name may hold (split into 255-byte character-strings).
pub const MAX_TXT_BYTES: usize = 4096;

/// The records of one name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecords {
    /// Its TXT records, one character-string each (split every 255 bytes on the wire).
    pub txt: Vec<String>,
    /// Its CNAME target (normalized: lowercase, no trailing dot), if any. A query of any
    /// type but CNAME follows it, whatever else the name holds.
    pub cname: Option<String>,
    /// The TTL of its records, in seconds.
    pub ttl: u32,
}

impl Default for DnsRecords {
    fn default() -> Self {
        Self {
            txt: Vec::new(),
            cname: None,
            ttl: DEFAULT_TTL,
        }
    }
}

/// The zone as configured: records by normalized name.
pub type DnsZone = BTreeMap<String, DnsRecords>;

/// A name as the zone keys it: lowercase, without the trailing dot; refused if it is not a
/// DNS name (empty labels, a label over 63 bytes, over 253 bytes in all, spaces or
/// backslashes).
pub fn normalize_name(name: &str) -> Result<String, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let bad = |why: &str| Err(format!("bad DNS name {name:?}: {why}"));
    if trimmed.is_empty() {
        return bad("empty");
    }
    if trimmed.len() > 253 {
        return bad("longer than 253 bytes");
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("every label must be 1 to 63 bytes");
        }
        if !label.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
            return bad("only printable ASCII without backslashes");
        }
    }
    Ok(trimmed.to_ascii_lowercase())
}

/// Checks a TXT value's length.
fn check_txt(name: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_TXT_BYTES {
        return Err(format!(
            "TXT value of {name} is {} bytes, over {MAX_TXT_BYTES}",
            value.len()
        ));
    }
    Ok(())
}

/// Adds to `zone`: TXT values for `name`, and its CNAME target and TTL if given. A name
/// can hold many TXT values but only one CNAME.
pub fn add_records(
    zone: &mut DnsZone,
    name: &str,
    txt: &[String],
    cname: Option<&str>,
    ttl: Option<u32>,
) -> Result<(), String> {
    let key = normalize_name(name)?;
    let target = cname.map(normalize_name).transpose()?;
    for t in txt {
        check_txt(&key, t)?;
    }
    let entry = zone.entry(key.clone()).or_default();
    entry.txt.extend(txt.iter().cloned());
    if let Some(target) = target {
        if entry.cname.as_ref().is_some_and(|c| *c != target) {
            return Err(format!("{key} given two CNAMEs"));
        }
        entry.cname = Some(target);
    }
    if let Some(ttl) = ttl {
        entry.ttl = ttl;
    }
    Ok(())
}

/// A command-line `NAME=VALUE` (`--dns`, `--dns-cname`), split.
pub fn split_flag<'a>(flag: &str, value: &'a str) -> Result<(&'a str, &'a str), String> {
    value
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("{flag} wants NAME=VALUE, got {value:?}"))
}

/// One name's records in the config file (`"dns":[…]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDnsEntry {
    /// The name (any case, trailing dot optional).
    pub name: String,
    /// Its TXT values.
    #[serde(default)]
    pub txt: Vec<String>,
    /// Its CNAME target.
    pub cname: Option<String>,
    /// Its TTL in seconds (default [`DEFAULT_TTL`]).
    pub ttl: Option<u32>,
}

/// How an injected fault answers a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsAnswer {
    /// RCODE 2, no answer.
    Servfail,
    /// RCODE 3, no answer.
    Nxdomain,
    /// NOERROR without answer records.
    Empty,
    /// HTTP 200 `application/dns-message` that is not a DNS message: a header claiming
    /// one answer, and nothing after it.
    Malformed,
    /// The normal answer (after the fault's delay).
    Slow,
    /// HTTP 500 with a short text.
    Http500,
}

impl DnsAnswer {
    /// Every answer, for parsing and messages.
    pub const ALL: [Self; 6] = [
        Self::Servfail,
        Self::Nxdomain,
        Self::Empty,
        Self::Malformed,
        Self::Slow,
        Self::Http500,
    ];

    /// Its name in `POST /dns/faults`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Servfail => "servfail",
            Self::Nxdomain => "nxdomain",
            Self::Empty => "empty",
            Self::Malformed => "malformed",
            Self::Slow => "slow",
            Self::Http500 => "http-500",
        }
    }

    /// The answer called `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DnsFault {
    /// Normalized question name it applies to.
    name: String,
    answer: DnsAnswer,
    delay: Duration,
    /// `None`: until reset.
    remaining: Option<u32>,
}

/// The fault a query met: how to answer, after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenFault {
    /// How to answer.
    pub answer: DnsAnswer,
    /// How long to wait first.
    pub delay: Duration,
}

/// The resolver's data: the zone (changed by control calls) and the queued faults.
#[derive(Debug, Default)]
pub struct Dns {
    zone: Mutex<HashMap<String, DnsRecords>>,
    faults: Mutex<Vec<DnsFault>>,
}

impl Dns {
    /// A resolver serving `zone`.
    pub fn new(zone: &DnsZone) -> Self {
        Self {
            zone: Mutex::new(zone.clone().into_iter().collect()),
            faults: Mutex::default(),
        }
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, HashMap<String, DnsRecords>> {
        self.zone.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fault_queue(&self) -> std::sync::MutexGuard<'_, Vec<DnsFault>> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the records of `name` (already normalized) with `records`; `None` removes
    /// the name.
    pub fn set(&self, name: String, records: Option<DnsRecords>) {
        let mut zone = self.zone();
        match records {
            Some(r) => zone.insert(name, r),
            None => zone.remove(&name),
        };
    }

    /// The whole zone, sorted by name.
    pub fn snapshot(&self) -> DnsZone {
        self.zone()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Queues a fault for queries of `name` (normalized): `count` of them, or all until
    /// reset (`None`). Faults are met in the order queued.
    pub fn push_fault(&self, name: String, answer: DnsAnswer, delay: Duration, count: Option<u32>) {
        self.fault_queue().push(DnsFault {
            name,
            answer,
            delay,
            remaining: count,
        });
    }

    /// The fault a query of `name` (normalized) meets, if one is queued; counts it.
    pub fn take_fault(&self, name: &str) -> Option<TakenFault> {
        let mut faults = self.fault_queue();
        let i = faults.iter().position(|f| f.name == name)?;
        let taken = TakenFault {
            answer: faults[i].answer,
            delay: faults[i].delay,
        };
        if let Some(n) = &mut faults[i].remaining {
            *n = n.saturating_sub(1);
            if *n == 0 {
                faults.remove(i);
            }
        }
        Some(taken)
    }

    /// Drops every fault (the zone stays).
    pub fn clear_faults(&self) {
        self.fault_queue().clear();
    }

    /// Resolves `qname` (normalized) for `qtype` as a recursive resolver does: the CNAME
    /// chain (at most [`MAX_CNAME_HOPS`], stopping at a name seen before), then the final
    /// name's TXT records. A CNAME query answers only the name's own CNAME.
    pub fn resolve(&self, qname: &str, qtype: QTYPE) -> Resolution {
        let zone = self.zone();
        let mut answers = Vec::new();
        let mut current = qname.to_string();
        if qtype == QTYPE::TYPE(TYPE::CNAME) {
            return match zone.get(&current) {
                None => Resolution::nxdomain(answers),
                Some(r) => {
                    if let Some(target) = &r.cname {
                        answers.push(Record::cname(&current, target, r.ttl));
                    }
                    Resolution::found(answers, r.ttl)
                }
            };
        }
        let mut seen = HashSet::from([current.clone()]);
        loop {
            let Some(records) = zone.get(&current) else {
                return Resolution::nxdomain(answers);
            };
            if let Some(target) = &records.cname {
                answers.push(Record::cname(&current, target, records.ttl));
                // A loop or an over-long chain: the CNAMEs so far, for the client to judge.
                if !seen.insert(target.clone()) || answers.len() >= MAX_CNAME_HOPS {
                    return Resolution::found(answers, records.ttl);
                }
                current = target.clone();
                continue;
            }
            if matches!(qtype, QTYPE::TYPE(TYPE::TXT) | QTYPE::ANY) {
                answers.extend(records.txt.iter().map(|t| Record {
                    owner: current.clone(),
                    data: RecordData::Txt(t.clone()),
                    ttl: records.ttl,
                }));
            }
            return Resolution::found(answers, records.ttl);
        }
    }
}

/// One answer record, owned (the packet borrows from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name (normalized).
    pub owner: String,
    /// What it holds.
    pub data: RecordData,
    /// TTL in seconds.
    pub ttl: u32,
}

impl Record {
    fn cname(owner: &str, target: &str, ttl: u32) -> Self {
        Self {
            owner: owner.to_string(),
            data: RecordData::Cname(target.to_string()),
            ttl,
        }
    }
}

/// What a [`Record`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// A CNAME to this target.
    Cname(String),
    /// One TXT record with this value.
    Txt(String),
}

/// The outcome of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The response code.
    pub rcode: RCODE,
    /// The answer section, in order.
    pub answers: Vec<Record>,
    /// How long a client may cache the answer: the least TTL of the answer records, else
    /// the TTL of the last name found ([`DEFAULT_TTL`] if none was).
    pub max_age: u32,
}

impl Resolution {
    fn found(answers: Vec<Record>, name_ttl: u32) -> Self {
        let max_age = answers.iter().map(|r| r.ttl).min().unwrap_or(name_ttl);
        Self {
            rcode: RCODE::NoError,
            answers,
            max_age,
        }
    }

    fn nxdomain(answers: Vec<Record>) -> Self {
        let max_age = answers.iter().map(|r| r.ttl).min().unwrap_or(DEFAULT_TTL);
        Self {
            rcode: RCODE::NameError,
            answers,
            max_age,
        }
    }

    pub fn fault(rcode: RCODE, max_age: u32) -> Self {
        Self {
            rcode,
            answers: Vec::new(),
            max_age,
        }
    }
}

/// The question name of `packet`, normalized for the zone and the counters.
pub fn question_key(q: &Question<'_>) -> String {
    q.qname.to_string().to_ascii_lowercase()
}

/// A short name for a query type, for the counters (`TXT`, `CNAME`, `A`, `TYPE65`).
pub fn qtype_name(qtype: QTYPE) -> String {
    match qtype {
        QTYPE::TYPE(TYPE::TXT) => "TXT".into(),
        QTYPE::TYPE(TYPE::CNAME) => "CNAME".into(),
        QTYPE::TYPE(TYPE::A) => "A".into(),
        QTYPE::TYPE(TYPE::AAAA) => "AAAA".into(),
        QTYPE::ANY => "ANY".into(),
        other => format!("TYPE{}", u16::from(other)),
    }
}

/// The bytes of the answer to `query` carrying `res`: the query's ID, question, RD and CD
/// echoed, QR and RA set, an OPT if the query had one.
pub fn build_answer(query: &Packet<'_>, res: &Resolution) -> Result<Vec<u8>, String> {
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    for flag in [PacketFlag::RECURSION_DESIRED, PacketFlag::CHECKING_DISABLED] {
        if query.has_flags(flag) {
            reply.set_flags(flag);
        }
    }
    *reply.rcode_mut() = res.rcode;
    reply.questions = query.questions.clone();
    if query.opt().is_some() {
        *reply.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size: 512,
            version: 0,
        });
    }
    let Some(question) = query.questions.first() else {
        return Err("a query without a question".into());
    };
    for (i, rec) in res.answers.iter().enumerate() {
        // The first owner is the question's name as asked (its case too), as resolvers
        // answer; the rest are the zone's CNAME targets.
        let owner = if i == 0 {
            question.qname.clone()
        } else {
            Name::new_unchecked(&rec.owner)
        };
        let rdata = match &rec.data {
            RecordData::Cname(target) => RData::CNAME(CNAME(Name::new_unchecked(target))),
            RecordData::Txt(value) => RData::TXT(txt_rdata(value)?),
        };
        reply
            .answers
            .push(ResourceRecord::new(owner, CLASS::IN, rec.ttl, rdata));
    }
    reply
        .build_bytes_vec_compressed()
        .map_err(|e| format!("cannot encode the answer: {e}"))
}

/// One TXT record holding `value`, split into character-strings of at most 255 bytes.
fn txt_rdata(value: &str) -> Result<TXT<'_>, String> {
    let bytes = value.as_bytes();
    let mut txt = TXT::new();
    if bytes.is_empty() {
        txt.add_char_string(CharacterString::new(b"").map_err(|e| e.to_string())?);
    }
    for chunk in bytes.chunks(255) {
        txt.add_char_string(CharacterString::new(chunk).map_err(|e| e.to_string())?);
    }
    Ok(txt)
}

/// A header claiming one answer with nothing after it: not a DNS message, whatever a
/// parser makes of the ID.
pub fn malformed_message(id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    // QR, RD, RA; QDCOUNT 0, ANCOUNT 1, NSCOUNT 0, ARCOUNT 0.
    m.extend_from_slice(&[0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(entries: &[(&str, &[&str], Option<&str>, u32)]) -> Dns {
        let mut z = DnsZone::new();
        for (name, txt, cname, ttl) in entries {
            let txt: Vec<String> = txt.iter().map(|s| s.to_string()).collect();
            add_records(&mut z, name, &txt, *cname, Some(*ttl)).unwrap();
        }
        Dns::new(&z)
    }

    const TXT_Q: QTYPE = QTYPE::TYPE(TYPE::TXT);

    #[test]
    fn names_are_normalized_and_checked() {
        assert_eq!(
            normalize_name("Orders.Example.COM.").unwrap(),
            "orders.example.com"
        );
        assert_eq!(normalize_name("a.b").unwrap(), "a.b");
        let long = format!("{}.com", "a".repeat(64));
        for bad in ["", ".", "a..b", "a b.com", "a\\.b", long.as_str(), "a.b.."] {
            assert!(normalize_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn follows_cname_chains_and_stops_at_loops() {
        let dns = zone(&[
            ("a.example", &[], Some("b.example"), 60),
            ("b.example", &[], Some("c.example"), 20),
            ("c.example", &["p:r:i", "x"], None, 40),
            ("loop1", &[], Some("loop2"), 30),
            ("loop2", &[], Some("LOOP1."), 30),
            ("dangling", &[], Some("nowhere"), 30),
        ]);
        let r = dns.resolve("a.example", TXT_Q);
        assert_eq!(r.rcode, RCODE::NoError);
        assert_eq!(r.answers.len(), 4);
        assert_eq!(r.answers[1].data, RecordData::Cname("c.example".into()));
        assert_eq!(r.answers[3].data, RecordData::Txt("x".into()));
        assert_eq!(r.max_age, 20);
        let r = dns.resolve("loop1", TXT_Q);
        assert_eq!((r.rcode, r.answers.len()), (RCODE::NoError, 2));
        let r = dns.resolve("dangling", TXT_Q);
        assert_eq!((r.rcode, r.answers.len()), (RCODE::NameError, 1));
        let r = dns.resolve("a.example", QTYPE::TYPE(TYPE::CNAME));
        assert_eq!(r.answers, vec![Record::cname("a.example", "b.example", 60)]);
        let r = dns.resolve("c.example", QTYPE::TYPE(TYPE::A));
        assert_eq!(
            (r.rcode, r.answers.len(), r.max_age),
            (RCODE::NoError, 0, 40)
        );
        assert_eq!(dns.resolve("nope", TXT_Q).rcode, RCODE::NameError);
    }

    #[test]
    fn long_chains_stop_after_the_hop_limit() {
        let mut z = DnsZone::new();
        for i in 0..40 {
            let next = format!("n{}", i + 1);
            add_records(&mut z, &format!("n{i}"), &[], Some(&next), None).unwrap();
        }
        let r = Dns::new(&z).resolve("n0", TXT_Q);
        assert_eq!((r.rcode, r.answers.len()), (RCODE::NoError, MAX_CNAME_HOPS));
    }

    #[test]
    fn long_txt_values_split_into_character_strings() {
        let value = "x".repeat(600);
        let txt = txt_rdata(&value).unwrap();
        let parts: Vec<usize> = txt.iter_raw().map(|(k, _)| k.len()).collect();
        // iter_raw splits each string at '='; there is none here.
        assert_eq!(parts, vec![255, 255, 90]);
        // An empty value is one empty character-string: RDLENGTH 1, a zero length byte.
        let mut p = Packet::new_reply(1);
        let rr = ResourceRecord::new(
            Name::new_unchecked("a"),
            CLASS::IN,
            30,
            RData::TXT(txt_rdata("").unwrap()),
        );
        p.answers.push(rr);
        assert!(p.build_bytes_vec().unwrap().ends_with(&[0, 1, 0]));
    }

    #[test]
    fn faults_are_taken_per_name_in_order() {
        let dns = Dns::default();
        dns.push_fault("a".into(), DnsAnswer::Servfail, Duration::ZERO, Some(1));
        dns.push_fault("a".into(), DnsAnswer::Empty, Duration::ZERO, None);
        assert_eq!(dns.take_fault("b"), None);
        assert_eq!(dns.take_fault("a").unwrap().answer, DnsAnswer::Servfail);
        for _ in 0..3 {
            assert_eq!(dns.take_fault("a").unwrap().answer, DnsAnswer::Empty);
        }
        dns.clear_faults();
        assert_eq!(dns.take_fault("a"), None);
        for a in DnsAnswer::ALL {
            assert_eq!(DnsAnswer::parse(a.name()), Some(a));
        }
    }

    #[test]
    fn flags_split_name_and_value() {
        assert_eq!(split_flag("--dns", "a.b=p:r:i=x"), Ok(("a.b", "p:r:i=x")));
        assert!(split_flag("--dns", "novalue").is_err());
        assert!(split_flag("--dns", "=v").is_err());
        let mut z = DnsZone::new();
        add_records(&mut z, "a", &[], Some("b"), None).unwrap();
        assert!(add_records(&mut z, "A.", &[], Some("c"), None).is_err());
        let big = vec!["x".repeat(MAX_TXT_BYTES + 1)];
        assert!(add_records(&mut z, "a", &big, None, None).is_err());
    }
}
