//! What a domain name resolves to, as Google's resolvers decide it (Python's
//! `resolver.py`, Go's `resolver.go`): up to [`MAX_STEPS`] steps, each on the
//! current name; a Cloud SQL instance DNS name goes to the Admin API; a
//! CNAME is followed (a name seen twice is a loop); else the name's TXT
//! records, sorted as strings, the first that is an instance name (Cloud SQL
//! or AlloyDB) winning. A recursive resolver usually answers the whole CNAME
//! chain to a TXT query, so a step asks again only when the last answer says
//! nothing of the current name.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::doh;
use super::message::{Answer, QueryType, Rcode};
use super::DomainName;
use crate::cloudsql::dns_name;
use crate::credentials::TokenSource;
use crate::error::{Error, ErrorKind};
use crate::google_api::ApiClient;
use crate::http::Transport;
use crate::instance::Instance;

/// Steps of a resolution at most (Python's limit): CNAME hops, then the TXT
/// or Admin API step.
pub(crate) const MAX_STEPS: usize = 10;

/// How an Admin API resolution is cached: it carries no TTL.
const ADMIN_API_TTL: Duration = Duration::from_secs(300);

/// What resolves names: the DoH resolver, and the Cloud SQL Admin API for
/// instance DNS names.
pub(crate) struct Resolver {
    pub transport: Arc<dyn Transport>,
    /// The DoH resolver's URL.
    pub url: String,
    pub tokens: Arc<TokenSource>,
    /// The Cloud SQL Admin API.
    pub admin: ApiClient,
}

/// What a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolution {
    pub instance: Instance,
    /// How long the answer may be reused: the shortest TTL of the records
    /// it came from.
    pub ttl: Duration,
}

/// Why a name did not resolve.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub error: Error,
    /// The resolver or the Admin API could not answer (timeout, HTTP,
    /// SERVFAIL, 5xx): an earlier answer may still be used. Otherwise the
    /// name is known not to resolve (NXDOMAIN, no instance name in its TXT
    /// records, a loop, a 403 or 404 from the Admin API).
    pub transient: bool,
}

impl Failure {
    fn settled(error: Error) -> Self {
        Self {
            error,
            transient: false,
        }
    }

    fn from_error(error: Error) -> Self {
        let transient = match error.kind() {
            ErrorKind::Timeout | ErrorKind::Http | ErrorKind::Credentials => true,
            ErrorKind::AdminApi | ErrorKind::QuotaExceeded => error
                .api_error()
                .is_some_and(|a| a.status >= 500 || a.is_quota()),
            _ => false,
        };
        Self { error, transient }
    }
}

impl Resolver {
    /// Resolves `name` within `deadline`.
    pub(crate) fn resolve(
        &self,
        name: &DomainName,
        deadline: Instant,
    ) -> Result<Resolution, Failure> {
        let mut current = name.as_str().to_string();
        let mut seen = BTreeSet::from([current.clone()]);
        let mut ttl = u32::MAX;
        let mut last: Option<Answer> = None;
        for _ in 0..MAX_STEPS {
            if let Some(region) = dns_name::region_of(&current) {
                let instance = dns_name::resolve(
                    &current,
                    region,
                    &self.admin,
                    &self.tokens,
                    &*self.transport,
                    deadline,
                )
                .map_err(Failure::from_error)?;
                let ttl = Duration::from_secs(ttl.into()).min(ADMIN_API_TTL);
                return Ok(Resolution {
                    instance: Instance::CloudSql(instance),
                    ttl,
                });
            }
            let answer = match last.take() {
                Some(a) if a.mentions(&current) => a,
                _ => self.ask(name, &current, deadline)?,
            };
            if let Some((target, cname_ttl)) = answer.cname_of(&current) {
                ttl = ttl.min(cname_ttl);
                let target = target.to_string();
                if DomainName::parse(&target).is_none() {
                    return Err(Failure::settled(Error::dns(format!(
                        "{name}: the CNAME of {current} is {:?}, not a domain name",
                        crate::redact::server_text(&target, &[])
                    ))));
                }
                if !seen.insert(target.clone()) {
                    return Err(Failure::settled(Error::dns(format!(
                        "{name}: its CNAMEs loop ({current} points back to {target})"
                    ))));
                }
                current = target;
                last = Some(answer);
                continue;
            }
            let (texts, txt_ttl) = answer.txt_of(&current);
            let via = via(name, &current);
            let mut texts: Vec<&str> = texts.into_iter().flatten().collect();
            if texts.is_empty() {
                return Err(Failure::settled(Error::dns(format!(
                    "{name}{via} has no TXT record; give it one holding the instance name \
                     (PROJECT:REGION:INSTANCE or an AlloyDB instance URI)"
                ))));
            }
            // Go's order: the records sorted as strings, the first that parses.
            texts.sort_unstable();
            if let Some(instance) = texts.iter().find_map(|t| Instance::parse(t.trim()).ok()) {
                let ttl = ttl.min(txt_ttl.unwrap_or(0));
                return Ok(Resolution {
                    instance,
                    ttl: Duration::from_secs(ttl.into()),
                });
            }
            let first = texts[0];
            let why = Instance::parse(first.trim())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(Failure::settled(Error::dns(format!(
                "{name}{via}: no TXT record is an instance name; the first, {:?}, is not ({why})",
                crate::redact::server_text(first, &[]),
            ))));
        }
        Err(Failure::settled(Error::dns(format!(
            "{name}: more than {MAX_STEPS} steps of CNAMEs; the chain is too long or loops"
        ))))
    }

    /// `current`'s TXT answer, its response code checked.
    fn ask(&self, name: &DomainName, current: &str, deadline: Instant) -> Result<Answer, Failure> {
        let via = via(name, current);
        let answer = doh::ask(
            &*self.transport,
            &self.url,
            current,
            &format!("{name}{via}"),
            QueryType::Txt,
            deadline,
        )
        .map_err(|error| Failure {
            transient: true,
            error,
        })?;
        match answer.rcode {
            Rcode::NoError => Ok(answer),
            Rcode::NameError => Err(Failure::settled(Error::dns(format!(
                "{name}{via} does not exist (NXDOMAIN)"
            )))),
            Rcode::ServerFailure => Err(Failure {
                error: Error::dns(format!(
                    "the resolver failed to resolve {name}{via} (SERVFAIL)"
                )),
                transient: true,
            }),
            Rcode::Other(code) => Err(Failure {
                error: Error::dns(format!(
                    "the resolver refused to resolve {name}{via} (response code {code})"
                )),
                transient: true,
            }),
        }
    }
}

/// How an error names the CNAME `current` reached from `name`, if it did.
fn via(name: &DomainName, current: &str) -> String {
    if current == name.as_str() {
        String::new()
    } else {
        format!(" (through CNAME {current})")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use simple_dns::RCODE;

    use super::super::message::build::{answer, Rr};
    use super::*;
    use crate::credentials::source::Endpoints;
    use crate::credentials::Credentials;
    use crate::http::{Answered, Pending, Request, Response};

    /// Answers DoH queries from a table of name → answer bytes, and Admin
    /// API calls with a fixed body; records what was asked.
    struct Table {
        answers: Vec<(String, Vec<u8>)>,
        admin: (u16, String),
        asked: Mutex<Vec<String>>,
    }

    impl Transport for Table {
        fn start(&self, req: &Request, _: Instant) -> Result<Box<dyn Pending>, Error> {
            if req.url.contains(":resolveConnectSettings") {
                self.asked.lock().unwrap().push(req.url.clone());
                return Ok(Box::new(Answered(Ok(Response {
                    status: self.admin.0,
                    body: self.admin.1.clone().into_bytes(),
                }))));
            }
            let q = simple_dns::Packet::parse(&req.body).unwrap();
            let name = q.questions[0].qname.to_string();
            self.asked.lock().unwrap().push(name.clone());
            let body = self
                .answers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.clone())
                .unwrap_or_else(|| answer(&name, RCODE::NameError, &[]));
            Ok(Box::new(Answered(Ok(Response { status: 200, body }))))
        }
    }

    fn resolver(answers: Vec<(&str, Vec<u8>)>) -> (Resolver, Arc<Table>) {
        resolver_with_admin(answers, (200, r#"{"connectionName":"p:us-west1:i"}"#))
    }

    fn resolver_with_admin(
        answers: Vec<(&str, Vec<u8>)>,
        admin: (u16, &str),
    ) -> (Resolver, Arc<Table>) {
        let table = Arc::new(Table {
            answers: answers
                .into_iter()
                .map(|(n, b)| (n.to_string(), b))
                .collect(),
            admin: (admin.0, admin.1.to_string()),
            asked: Mutex::new(Vec::new()),
        });
        let tokens = Arc::new(TokenSource::new(
            Some(Credentials::AccessToken {
                api_token: "ya29.test-token".into(),
                login_token: None,
            }),
            Endpoints::default(),
            table.clone(),
        ));
        let r = Resolver {
            transport: table.clone(),
            url: "https://dns.test/dns-query".into(),
            tokens,
            admin: ApiClient::new("https://sqladmin.test", "ua".into(), None),
        };
        (r, table)
    }

    fn name(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn the_first_txt_record_in_sorted_order_that_is_an_instance_wins() {
        let (r, _) = resolver(vec![(
            "db.example.com",
            answer(
                "db.example.com",
                RCODE::NoError,
                &[
                    Rr::Txt("db.example.com", &["v=spf1 -all"], 300),
                    Rr::Txt("db.example.com", &["z:r:second"], 300),
                    Rr::Txt("db.example.com", &["b:r:first"], 60),
                ],
            ),
        )]);
        let got = r.resolve(&name("db.example.com"), soon()).unwrap();
        assert_eq!(got.instance.to_string(), "b:r:first");
        assert_eq!(got.ttl, Duration::from_secs(60));
    }

    #[test]
    fn an_alloydb_uri_in_txt_is_an_alloydb_instance() {
        let uri = "projects/p/locations/r/clusters/c/instances/i";
        let (r, _) = resolver(vec![(
            "a.example.com",
            answer(
                "a.example.com",
                RCODE::NoError,
                &[Rr::Txt("a.example.com", &[uri], 30)],
            ),
        )]);
        let got = r.resolve(&name("a.example.com"), soon()).unwrap();
        assert!(matches!(got.instance, Instance::AlloyDb(_)));
    }

    #[test]
    fn a_cname_chain_in_one_answer_is_followed_without_asking_again() {
        let (r, table) = resolver(vec![(
            "db.example.com",
            answer(
                "db.example.com",
                RCODE::NoError,
                &[
                    Rr::Cname("db.example.com", "db.example.net", 20),
                    Rr::Txt("db.example.net", &["p:r:i"], 300),
                ],
            ),
        )]);
        let got = r.resolve(&name("db.example.com"), soon()).unwrap();
        assert_eq!(got.instance.to_string(), "p:r:i");
        assert_eq!(got.ttl, Duration::from_secs(20));
        assert_eq!(*table.asked.lock().unwrap(), ["db.example.com"]);
    }

    #[test]
    fn a_cname_left_unfollowed_is_asked_for() {
        let (r, table) = resolver(vec![
            (
                "db.example.com",
                answer(
                    "db.example.com",
                    RCODE::NoError,
                    &[Rr::Cname("db.example.com", "db.example.net", 30)],
                ),
            ),
            (
                "db.example.net",
                answer(
                    "db.example.net",
                    RCODE::NoError,
                    &[Rr::Txt("db.example.net", &["p:r:i"], 30)],
                ),
            ),
        ]);
        assert_eq!(
            r.resolve(&name("db.example.com"), soon())
                .unwrap()
                .instance
                .to_string(),
            "p:r:i"
        );
        assert_eq!(
            *table.asked.lock().unwrap(),
            ["db.example.com", "db.example.net"]
        );
    }

    #[test]
    fn a_cname_to_a_cloud_sql_instance_dns_name_goes_to_the_admin_api() {
        let (r, table) = resolver(vec![(
            "db.example.com",
            answer(
                "db.example.com",
                RCODE::NoError,
                &[Rr::Cname(
                    "db.example.com",
                    "a1.b2.us-west1.sql-psc.goog",
                    30,
                )],
            ),
        )]);
        let got = r.resolve(&name("db.example.com"), soon()).unwrap();
        assert_eq!(got.instance.to_string(), "p:us-west1:i");
        assert_eq!(got.ttl, Duration::from_secs(30));
        assert_eq!(
            table.asked.lock().unwrap()[1],
            "https://sqladmin.test/sql/v1beta4/locations/us-west1/dns/a1.b2.us-west1.sql-psc.goog.:resolveConnectSettings"
        );
    }

    #[test]
    fn an_instance_dns_name_is_never_looked_up_in_dns() {
        let (r, table) = resolver(vec![]);
        let got = r
            .resolve(&name("A1.b2.us-west1.sql.goog."), soon())
            .unwrap();
        assert_eq!(got.instance.to_string(), "p:us-west1:i");
        assert_eq!(table.asked.lock().unwrap().len(), 1);
        // The Admin API's refusal is its error, and settles the name.
        let (r, _) = resolver_with_admin(
            vec![],
            (
                404,
                r#"{"error":{"code":404,"message":"no such DNS name","status":"NOT_FOUND"}}"#,
            ),
        );
        let f = r
            .resolve(&name("a1.b2.us-west1.sql.goog"), soon())
            .unwrap_err();
        assert_eq!(f.error.kind(), ErrorKind::AdminApi);
        assert!(!f.transient);
        assert!(
            f.error.to_string().contains("no such DNS name"),
            "{}",
            f.error
        );
        let (r, _) = resolver_with_admin(vec![], (200, r#"{"connectionName":"nope"}"#));
        let f = r
            .resolve(&name("a1.b2.us-west1.sql.goog"), soon())
            .unwrap_err();
        assert_eq!(f.error.kind(), ErrorKind::InstanceMetadata);
        assert!(f.error.to_string().contains("\"nope\""), "{}", f.error);
    }

    #[test]
    fn bad_answers_are_errors_naming_the_name_and_the_cause() {
        let loop_answer = answer(
            "a.example.com",
            RCODE::NoError,
            &[
                Rr::Cname("a.example.com", "b.example.com", 30),
                Rr::Cname("b.example.com", "a.example.com", 30),
            ],
        );
        let long_chain: Vec<(String, Vec<u8>)> = (0..12)
            .map(|i| {
                let owner = format!("c{i}.example.com");
                let target = format!("c{}.example.com", i + 1);
                let bytes = answer(&owner, RCODE::NoError, &[Rr::Cname(&owner, &target, 30)]);
                (owner, bytes)
            })
            .collect();
        // (the resolver's answers by name, the name asked, transient, the cause named)
        type Case<'a> = (Vec<(String, Vec<u8>)>, &'a str, bool, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                vec![],
                "gone.example.com",
                false,
                "gone.example.com does not exist (NXDOMAIN)",
            ),
            (
                vec![(
                    "s.example.com".into(),
                    answer("s.example.com", RCODE::ServerFailure, &[]),
                )],
                "s.example.com",
                true,
                "SERVFAIL",
            ),
            (
                vec![(
                    "e.example.com".into(),
                    answer("e.example.com", RCODE::NoError, &[]),
                )],
                "e.example.com",
                false,
                "e.example.com has no TXT record",
            ),
            (
                vec![(
                    "t.example.com".into(),
                    answer(
                        "t.example.com",
                        RCODE::NoError,
                        &[
                            Rr::Txt("t.example.com", &["v=spf1"], 30),
                            Rr::Txt("t.example.com", &["hello"], 30),
                        ],
                    ),
                )],
                "t.example.com",
                false,
                "the first, \"hello\", is not",
            ),
            (
                vec![("a.example.com".into(), loop_answer)],
                "a.example.com",
                false,
                "CNAMEs loop",
            ),
            (long_chain, "c0.example.com", false, "more than 10 steps"),
            (
                // Found by fuzzing: no query can be made for such a target.
                vec![(
                    "x.example.com".into(),
                    answer(
                        "x.example.com",
                        RCODE::NoError,
                        &[Rr::Cname("x.example.com", "a.b.us-c%ntral1.sql", 30)],
                    ),
                )],
                "x.example.com",
                false,
                "is \"a.b.us-c%ntral1.sql\", not a domain name",
            ),
            (
                vec![("m.example.com".into(), vec![0, 0, 0x80, 0, 0, 1, 0, 1])],
                "m.example.com",
                true,
                "malformed DNS message",
            ),
        ];
        for (answers, asked, transient, says) in cases {
            let (r, _) = resolver(
                answers
                    .iter()
                    .map(|(n, b)| (n.as_str(), b.clone()))
                    .collect(),
            );
            let f = r.resolve(&name(asked), soon()).unwrap_err();
            assert_eq!(f.error.kind(), ErrorKind::Dns, "{asked}: {}", f.error);
            assert_eq!(f.transient, transient, "{asked}: {}", f.error);
            let text = f.error.to_string();
            assert!(text.contains(says), "{asked}: {text}");
            assert!(text.contains(asked), "{asked}: {text}");
        }
    }
}
