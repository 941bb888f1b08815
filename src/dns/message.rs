//! The DNS messages of a DoH exchange, sans-IO: the query for one name and
//! type, and what the answer says about it (its response code, and the CNAME
//! and TXT records of its answer section), read with `simple-dns`. Nothing in
//! an answer is trusted beyond its shape: names are compared lower case, and
//! a message that is not an answer to this query is [`Malformed`].

use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};

/// The record types the resolver asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryType {
    Txt,
}

impl QueryType {
    fn wire(self) -> TYPE {
        match self {
            Self::Txt => TYPE::TXT,
        }
    }
}

/// The query for `name`'s records of type `qtype`, ID 0 as RFC 8484 asks
/// (so HTTP caches can share answers), recursion desired.
pub(crate) fn query(name: &str, qtype: QueryType) -> Result<Vec<u8>, Malformed> {
    let mut packet = Packet::new_query(0);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).map_err(|e| Malformed(format!("cannot ask for {name:?}: {e}")))?;
    packet.questions.push(Question::new(
        qname,
        QTYPE::TYPE(qtype.wire()),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet
        .build_bytes_vec()
        .map_err(|e| Malformed(format!("cannot encode the query for {name:?}: {e}")))
}

/// An answer that is not a DNS answer to the query; says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub String);

/// The response code, as far as the resolver tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rcode {
    NoError,
    /// NXDOMAIN: the name does not exist.
    NameError,
    /// SERVFAIL: the resolver could not get an answer (DNSSEC failure,
    /// unreachable servers): may pass.
    ServerFailure,
    /// Any other code (REFUSED, FORMERR, NOTIMP, …), by number.
    Other(u16),
}

/// A record of the answer section the resolver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The owner name, lower case, without the trailing dot.
    pub owner: String,
    pub ttl: u32,
    pub data: Data,
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Data {
    /// A CNAME's target, lower case, without the trailing dot.
    Cname(String),
    /// A TXT record's character-strings joined (as Go's `LookupTXT` does);
    /// `None` if they are not UTF-8.
    Txt(Option<String>),
}

/// What an answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub rcode: Rcode,
    /// CNAME and TXT records of the answer section, in order; other types
    /// (RRSIG, A) are left out.
    pub records: Vec<Record>,
}

impl Answer {
    /// The CNAME target of `owner`, with its TTL, if the answer has one.
    pub(crate) fn cname_of(&self, owner: &str) -> Option<(&str, u32)> {
        self.records.iter().find_map(|r| match &r.data {
            Data::Cname(target) if r.owner == owner => Some((target.as_str(), r.ttl)),
            _ => None,
        })
    }

    /// The TXT records of `owner`, with the shortest TTL among them.
    pub(crate) fn txt_of(&self, owner: &str) -> (Vec<Option<&str>>, Option<u32>) {
        let mut ttl: Option<u32> = None;
        let texts = self
            .records
            .iter()
            .filter(|r| r.owner == owner)
            .filter_map(|r| match &r.data {
                Data::Txt(t) => {
                    ttl = Some(ttl.map_or(r.ttl, |x| x.min(r.ttl)));
                    Some(t.as_deref())
                }
                Data::Cname(_) => None,
            })
            .collect();
        (texts, ttl)
    }

    /// Whether the answer holds any record owned by `owner`.
    pub(crate) fn mentions(&self, owner: &str) -> bool {
        self.records.iter().any(|r| r.owner == owner)
    }
}

/// Reads `bytes` as the answer to the query for `name` of type `qtype`.
pub(crate) fn parse(bytes: &[u8], name: &str, qtype: QueryType) -> Result<Answer, Malformed> {
    let packet = Packet::parse(bytes).map_err(|e| Malformed(format!("not a DNS message: {e}")))?;
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return Err(Malformed("a query, not a response".into()));
    }
    if packet.id() != 0 {
        return Err(Malformed(format!(
            "the answer is to query {}, not to this one (0)",
            packet.id()
        )));
    }
    if packet.has_flags(PacketFlag::TRUNCATION) {
        return Err(Malformed("the answer is truncated".into()));
    }
    let asked = match packet.questions.as_slice() {
        [q] => q,
        qs => {
            return Err(Malformed(format!(
                "the answer has {} questions, not the one asked",
                qs.len()
            )))
        }
    };
    if lower(&asked.qname) != name || asked.qtype != QTYPE::TYPE(qtype.wire()) {
        return Err(Malformed(format!(
            "the answer is to another question ({} {:?})",
            lower(&asked.qname),
            asked.qtype
        )));
    }
    let rcode = match packet.rcode() {
        RCODE::NoError => Rcode::NoError,
        RCODE::NameError => Rcode::NameError,
        RCODE::ServerFailure => Rcode::ServerFailure,
        other => Rcode::Other(other as u16),
    };
    let records = packet
        .answers
        .iter()
        .filter(|r| r.class == CLASS::IN)
        .filter_map(|r| {
            let data = match &r.rdata {
                RData::CNAME(target) => Data::Cname(lower(&target.0)),
                RData::TXT(txt) => Data::Txt(String::try_from(txt.clone()).ok()),
                _ => return None,
            };
            Some(Record {
                owner: lower(&r.name),
                ttl: r.ttl,
                data,
            })
        })
        .collect();
    Ok(Answer { rcode, records })
}

/// A name as the resolver compares them: lower case, no trailing dot.
fn lower(name: &Name<'_>) -> String {
    let s = name.to_string().to_ascii_lowercase();
    s.strip_suffix('.').map(str::to_string).unwrap_or(s)
}

/// Builders of answers, for the tests of the resolver.
#[cfg(test)]
pub(crate) mod build {
    use simple_dns::rdata::{CNAME, TXT};
    use simple_dns::ResourceRecord;

    use super::*;

    /// One record of a test answer.
    pub(crate) enum Rr<'a> {
        Cname(&'a str, &'a str, u32),
        Txt(&'a str, &'a [&'a str], u32),
    }

    /// The answer to `name`'s TXT query with `rcode` and `records`.
    pub(crate) fn answer(name: &str, rcode: RCODE, records: &[Rr<'_>]) -> Vec<u8> {
        let mut p = Packet::new_reply(0);
        p.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
        *p.rcode_mut() = rcode;
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(TYPE::TXT),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        for r in records {
            let rr = match r {
                Rr::Cname(owner, target, ttl) => ResourceRecord::new(
                    Name::new_unchecked(owner),
                    CLASS::IN,
                    *ttl,
                    RData::CNAME(CNAME(Name::new_unchecked(target))),
                ),
                Rr::Txt(owner, strings, ttl) => {
                    let mut txt = TXT::new();
                    for s in *strings {
                        txt.add_string(s).unwrap();
                    }
                    ResourceRecord::new(
                        Name::new_unchecked(owner),
                        CLASS::IN,
                        *ttl,
                        RData::TXT(txt),
                    )
                }
            };
            p.answers.push(rr);
        }
        p.build_bytes_vec().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::build::{answer, Rr};
    use super::*;

    #[test]
    fn a_query_asks_one_question_recursively_with_id_0() {
        let q = query("orders.example.com", QueryType::Txt).unwrap();
        let p = Packet::parse(&q).unwrap();
        assert_eq!(p.id(), 0);
        assert!(p.has_flags(PacketFlag::RECURSION_DESIRED));
        assert!(!p.has_flags(PacketFlag::RESPONSE));
        assert_eq!(p.questions.len(), 1);
        assert_eq!(p.questions[0].qname.to_string(), "orders.example.com");
        assert_eq!(p.questions[0].qtype, QTYPE::TYPE(TYPE::TXT));
    }

    #[test]
    fn an_answer_gives_its_chain_and_texts_lower_case() {
        let bytes = answer(
            "Orders.Example.com",
            RCODE::NoError,
            &[
                Rr::Cname("Orders.Example.com", "DB.example.net", 300),
                Rr::Txt("db.example.net", &["p:us-central1:", "orders"], 60),
                Rr::Txt("db.example.net", &["b:r:i"], 30),
            ],
        );
        let a = parse(&bytes, "orders.example.com", QueryType::Txt).unwrap();
        assert_eq!(a.rcode, Rcode::NoError);
        assert_eq!(
            a.cname_of("orders.example.com"),
            Some(("db.example.net", 300))
        );
        let (texts, ttl) = a.txt_of("db.example.net");
        assert_eq!(texts, vec![Some("p:us-central1:orders"), Some("b:r:i")]);
        assert_eq!(ttl, Some(30));
        assert!(a.mentions("db.example.net"));
        assert!(!a.mentions("other.example.net"));
    }

    #[test]
    fn response_codes_are_told_apart() {
        for (code, want) in [
            (RCODE::NameError, Rcode::NameError),
            (RCODE::ServerFailure, Rcode::ServerFailure),
            (RCODE::Refused, Rcode::Other(5)),
        ] {
            let a = parse(
                &answer("a.example.com", code, &[]),
                "a.example.com",
                QueryType::Txt,
            );
            assert_eq!(a.unwrap().rcode, want);
        }
    }

    #[test]
    fn what_is_not_the_answer_to_this_query_is_malformed() {
        let ok = answer("a.example.com", RCODE::NoError, &[]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "not a DNS message"),
            (ok[..5].to_vec(), "not a DNS message"),
            (query("a.example.com", QueryType::Txt).unwrap(), "a query"),
            (
                answer("b.example.com", RCODE::NoError, &[]),
                "another question",
            ),
            (
                {
                    let mut b = ok.clone();
                    b[1] = 7;
                    b
                },
                "not to this one",
            ),
            (
                {
                    let mut b = ok.clone();
                    b[2] |= 0x02;
                    b
                },
                "truncated",
            ),
            (
                {
                    // A header claiming one answer, and nothing after it.
                    let mut b = ok[..12].to_vec();
                    b[7] = 1;
                    b
                },
                "not a DNS message",
            ),
        ];
        for (bytes, says) in cases {
            let e = parse(&bytes, "a.example.com", QueryType::Txt).unwrap_err();
            assert!(e.0.contains(says), "{says}: {e:?}");
        }
    }
}
