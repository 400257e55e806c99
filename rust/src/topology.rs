//! Which Redis a connection talks to, and how: one server, a Redis Cluster, or the primary that
//! Redis Sentinel names.
//!
//! - `redis://`, `rediss://`, `unix://`: one URL. Whether it is a cluster node is found out on
//!   connect (`INFO cluster`): a cluster node hands over to redis-rs's cluster client (MOVED/ASK,
//!   topology refresh), anything else is one server behind a `ConnectionManager`.
//! - Several URLs, comma-separated: seed nodes of one cluster (the first that answers is asked
//!   for the topology); several URLs that are not a cluster are refused.
//! - `redis+sentinel://[user:pass@]host:port[,host:port...]/<master name>[/<db>]` (and
//!   `rediss+sentinel://` for TLS to sentinels and primary alike): the sentinels are asked for
//!   the primary (`SENTINEL get-master-addr-by-name`), which must answer `ROLE` as a master;
//!   the user and password are the primary's (`sentinel_username` / `sentinel_password` query
//!   parameters give the sentinels' own, when they require one). When the link to the primary
//!   breaks or it answers READONLY (demoted by a failover), `conn` drops the link and asks the
//!   sentinels again (`Connection::follows_failover`).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    TlsCertificates, Value,
};

/// An open link: to one server, or to a whole cluster.
#[derive(Clone)]
pub enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(m) => m.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(m) => m.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(m) => m.get_db(),
            Link::Cluster(_) => 0,
        }
    }
}

impl Link {
    /// `cmd` on every master of a cluster (a map of node address -> reply), or on the one
    /// server: what a start-up check of every node needs (CONFIG GET, INFO).
    pub async fn on_every_master(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Link::Single(m) => m.req_packed_command(cmd).await,
            Link::Cluster(c) => {
                let routing = redis::cluster_routing::RoutingInfo::MultiNode((
                    redis::cluster_routing::MultipleNodeRoutingInfo::AllMasters,
                    None,
                ));
                c.route_command(cmd.clone(), routing).await
            }
        }
    }
}

/// What a URL names (before connecting).
pub enum Target {
    /// One or more URLs of servers: one server, or seed nodes of a cluster (found on connect).
    Servers(Vec<Client>),
    Sentinel(Sentinel),
}

/// What was found on connect.
pub enum Topology {
    Single,
    Cluster(Box<ClusterClient>),
    Sentinel,
}

/// Timeouts of every connection a `Connection` opens.
#[derive(Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl Timeouts {
    pub fn manager_config(self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect))
            .set_response_timeout(Some(self.response))
            // one try per (re)connect: `retry` decides when to try again, so there is one
            // retry policy, not two stacked
            .set_number_of_retries(0)
    }

    fn probe_config(self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect))
            .set_response_timeout(Some(self.connect.max(Duration::from_secs(1))))
    }
}

fn invalid(message: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, "invalid Redis URL", message))
}

fn open_client(url: &str, tls: Option<&TlsCertificates>) -> RedisResult<Client> {
    match tls {
        Some(certs) => Client::build_with_tls(url, certs.clone()),
        None => Client::open(url),
    }
}

/// Parse what `RedisConnection(url)` was given.
pub fn parse(url: &str, tls: Option<&TlsCertificates>) -> RedisResult<Target> {
    let url = url.trim();
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some(data_scheme) = scheme.strip_suffix("+sentinel") {
            return Sentinel::parse(data_scheme, rest, tls).map(Target::Sentinel);
        }
    }
    let clients = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| open_client(u, tls))
        .collect::<RedisResult<Vec<_>>>()?;
    if clients.is_empty() {
        return Err(invalid("no URL given".into()));
    }
    Ok(Target::Servers(clients))
}

/// Whether the server `client` reaches runs in cluster mode (`INFO cluster`). A server that
/// refuses INFO (an ACL without it) is taken as not a cluster node.
async fn is_cluster_node(client: &Client, timeouts: Timeouts) -> RedisResult<bool> {
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&timeouts.probe_config())
        .await?;
    let info: RedisResult<String> = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await;
    match info {
        Ok(text) => Ok(text.lines().any(|l| l.trim() == "cluster_enabled:1")),
        Err(e) if e.code().is_some() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Find out what `seeds` are: the first seed that answers decides.
pub async fn discover(
    seeds: &[Client],
    tls: Option<&TlsCertificates>,
    timeouts: Timeouts,
) -> RedisResult<Topology> {
    let mut last_err = None;
    for seed in seeds {
        match is_cluster_node(seed, timeouts).await {
            Ok(true) => {
                let mut builder = ClusterClientBuilder::new(
                    seeds
                        .iter()
                        .map(|c| c.get_connection_info().clone())
                        .collect::<Vec<_>>(),
                )
                .connection_timeout(timeouts.connect)
                .response_timeout(timeouts.response)
                // MOVED/ASK and a topology refresh are followed inside the cluster client;
                // connection failures come back to `retry`
                .retries(4)
                .min_retry_wait(20)
                .max_retry_wait(500);
                if let Some(certs) = tls {
                    builder = builder.certs(certs.clone());
                }
                return builder.build().map(|c| Topology::Cluster(Box::new(c)));
            }
            Ok(false) if seeds.len() > 1 => {
                return Err(invalid(format!(
                    "{} URLs were given (comma-separated), which is for the seed nodes of a \
                     Redis Cluster, but {} is not a cluster node",
                    seeds.len(),
                    crate::conn::redact_url(&seed.get_connection_info().addr().to_string()),
                )));
            }
            Ok(false) => return Ok(Topology::Single),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| invalid("no URL given".into())))
}

/// Open a link of a discovered topology (`Single`: to `client`).
pub async fn open_link(
    topology: &Topology,
    client: &Client,
    timeouts: Timeouts,
) -> RedisResult<Link> {
    match topology {
        Topology::Cluster(cluster) => cluster.get_async_connection().await.map(Link::Cluster),
        Topology::Single | Topology::Sentinel => client
            .get_connection_manager_with_config(timeouts.manager_config())
            .await
            .map(Link::Single),
    }
}

/// `text` percent-encoded for a URL's userinfo.
fn userinfo(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A percent-encoded path segment decoded (`+` stays a plus).
fn percent_decoded(segment: &str) -> String {
    let query = format!("v={}", segment.replace('+', "%2B"));
    url::form_urlencoded::parse(query.as_bytes())
        .next()
        .map_or_else(|| segment.to_string(), |(_, v)| v.into_owned())
}

/// Sentinels and the name of the primary they watch.
pub struct Sentinel {
    sentinels: Vec<Client>,
    master_name: String,
    /// `redis` or `rediss`, for the primary's URL.
    scheme: String,
    /// `user:pass@` (URL-encoded as given) or "".
    auth: String,
    db: i64,
    tls: Option<TlsCertificates>,
}

impl Sentinel {
    fn parse(scheme: &str, rest: &str, tls: Option<&TlsCertificates>) -> RedisResult<Self> {
        if scheme != "redis" && scheme != "rediss" {
            return Err(invalid(format!(
                "the scheme must be redis+sentinel:// or rediss+sentinel://, not {scheme}+sentinel://"
            )));
        }
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (auth, hosts) = match authority.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), authority),
        };
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let master_name = parts.next().ok_or_else(|| {
            invalid(
                "a sentinel URL names the primary after the hosts: \
                 redis+sentinel://host:26379,host:26380/<master name>[/<db>]"
                    .into(),
            )
        })?;
        let db = match parts.next() {
            Some(d) => d
                .parse::<i64>()
                .map_err(|_| invalid(format!("the database must be a number, not {d:?}")))?,
            None => 0,
        };
        let mut sentinel_auth = String::new();
        let (mut s_user, mut s_pass) = (String::new(), String::new());
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "sentinel_username" => s_user = value.into_owned(),
                "sentinel_password" => s_pass = value.into_owned(),
                other => {
                    return Err(invalid(format!(
                        "unknown sentinel URL parameter {other:?} (known: sentinel_username, \
                         sentinel_password)"
                    )))
                }
            }
        }
        if !s_user.is_empty() || !s_pass.is_empty() {
            sentinel_auth = format!("{}:{}@", userinfo(&s_user), userinfo(&s_pass));
        }
        let sentinels = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                let h = if h.contains(':') {
                    h.to_string()
                } else {
                    format!("{h}:26379")
                };
                open_client(&format!("{scheme}://{sentinel_auth}{h}"), tls)
            })
            .collect::<RedisResult<Vec<_>>>()?;
        if sentinels.is_empty() {
            return Err(invalid(
                "a sentinel URL needs at least one sentinel host".into(),
            ));
        }
        Ok(Self {
            sentinels,
            master_name: percent_decoded(master_name),
            scheme: scheme.to_string(),
            auth,
            db,
            tls: tls.cloned(),
        })
    }

    pub fn db(&self) -> i64 {
        self.db
    }

    /// A client for the current primary: the first sentinel that names one whose `ROLE` says
    /// master (during a failover sentinels may still name the old one for a moment).
    pub async fn master(&self, timeouts: Timeouts) -> RedisResult<Client> {
        let mut last_err = None;
        for sentinel in &self.sentinels {
            match self.ask(sentinel, timeouts).await {
                Ok(client) => return Ok(client),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| invalid("no sentinel".into())))
    }

    async fn ask(&self, sentinel: &Client, timeouts: Timeouts) -> RedisResult<Client> {
        let mut conn = sentinel
            .get_multiplexed_async_connection_with_config(&timeouts.probe_config())
            .await?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut conn)
            .await?;
        let Some((host, port)) = addr else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "unknown primary",
                format!(
                    "the sentinel does not monitor a primary named {:?}",
                    self.master_name
                ),
            )));
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let url = format!("{}://{}{host}:{port}/{}", self.scheme, self.auth, self.db);
        let client = open_client(&url, self.tls.as_ref())?;
        let mut primary = client
            .get_multiplexed_async_connection_with_config(&timeouts.probe_config())
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut primary).await?;
        match role.first() {
            Some(Value::BulkString(r)) if r == b"master" => Ok(client),
            Some(Value::SimpleString(r)) if r == "master" => Ok(client),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("{host}:{port}, named primary by a sentinel, is not a master (yet)"),
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, percent_decoded, userinfo, Target};

    #[test]
    fn sentinel_urls_are_decoded() {
        assert_eq!(percent_decoded("my%20master"), "my master");
        assert_eq!(percent_decoded("a+b"), "a+b");
        assert_eq!(userinfo("s p:@"), "s%20p%3A%40");
        let Ok(Target::Sentinel(s)) = parse(
            "redis+sentinel://u:pw@h1:26379,h2/my%20master/3?sentinel_password=s+p",
            None,
        ) else {
            panic!("a sentinel target");
        };
        assert_eq!(
            (s.master_name.as_str(), s.db, s.sentinels.len()),
            ("my master", 3, 2)
        );
        assert!(parse("redis+sentinel://h1:26379", None).is_err());
        assert!(parse("redis+sentinel://h1/m?nope=1", None).is_err());
        assert!(parse("ftp+sentinel://h1/m", None).is_err());
    }
}
