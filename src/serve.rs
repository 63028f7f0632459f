//! `wgtrain web`: serves the page (`web/index.html`, its script and the wasm that
//! `web/build.sh` makes), the configs and a data directory's four IDX files over plain
//! HTTP/1.1 on a local address. Only those files are reachable: a request names a route, not
//! a path, so nothing else on the machine can be read through it. HTTP itself is hyper's
//! (parsing, keep-alive, bodies); what is here is what to answer, and the bounds that keep
//! any local client from crashing or bloating the server: a header timeout, a bound on the
//! head's size and on connections, files streamed a chunk at a time, and on loopback only
//! requests that name this server.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, SizeHint};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncRead;

/// Why the page cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "the page is not built: {missing} is missing (hint: run web/build.sh once, then wgtrain web)"
    )]
    NotBuilt { missing: PathBuf },
    #[error("cannot listen on {address}: {reason} (hint: choose another --port, or 0 for any)")]
    Listen {
        address: String,
        // Not `source`: the message says it once, and `error: {:#}` would say it again.
        reason: std::io::Error,
    },
    #[error("cannot start the server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

/// What the server serves: the page's directory (`web/`, holding `pkg/` once built), the
/// configs directory and the data directory.
#[derive(Debug, Clone)]
pub struct Site {
    pub web_dir: PathBuf,
    pub configs_dir: PathBuf,
    pub data_dir: PathBuf,
}

/// The files of the page itself, each with its content type.
const PAGE_FILES: [(&str, &str); 5] = [
    ("index.html", "text/html; charset=utf-8"),
    ("page.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("pkg/wgtrain_web.js", "text/javascript; charset=utf-8"),
    ("pkg/wgtrain_web_bg.wasm", "application/wasm"),
];

impl Site {
    /// The page, configs and data beside this source tree (or under the working directory),
    /// with the data in `data_dir`.
    pub fn in_source_tree(data_dir: PathBuf) -> Site {
        use crate::data::in_working_or_source_tree;
        Site {
            web_dir: in_working_or_source_tree(Path::new("web")),
            configs_dir: in_working_or_source_tree(Path::new("configs")),
            data_dir,
        }
    }

    /// Checks, before anything is served, that the data is four readable IDX files of
    /// matching images and labels (checksums too, where listed) and that the page is built,
    /// so a problem is an error here rather than a page that fails later.
    pub fn check(&self) -> Result<(), ServeError> {
        use crate::data::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_pair};
        read_pair(&self.data_dir, TRAIN_IMAGES, TRAIN_LABELS)?;
        read_pair(&self.data_dir, TEST_IMAGES, TEST_LABELS)?;
        for (file, _) in PAGE_FILES {
            let path = self.web_dir.join(file);
            if !path.is_file() {
                return Err(ServeError::NotBuilt { missing: path });
            }
        }
        Ok(())
    }

    /// The configs a page can choose: the stems of `configs/*.toml`, sorted.
    pub fn config_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.configs_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                (path.extension()? == "toml")
                    .then(|| path.file_stem()?.to_str().map(String::from))?
            })
            .collect();
        names.sort();
        names
    }

    /// The reply for the request path `route` (its query dropped), or `None` for a route
    /// that is not one of the site's.
    fn route(&self, route: &str) -> Option<Reply> {
        let route = route.split('?').next().unwrap_or_default();
        if route == "/" {
            return Some(Reply::File(
                self.web_dir.join("index.html"),
                PAGE_FILES[0].1,
            ));
        }
        if let Some((name, kind)) = PAGE_FILES
            .iter()
            .find(|(name, _)| route == format!("/{name}"))
        {
            return Some(Reply::File(self.web_dir.join(name), kind));
        }
        if route == "/configs/index.json" {
            let names = serde_json::to_vec(&self.config_names()).ok()?;
            return Some(Reply::Bytes(names, "application/json"));
        }
        if let Some(name) = route
            .strip_prefix("/configs/")
            .and_then(|n| n.strip_suffix(".toml"))
        {
            return self.config_names().iter().any(|n| n == name).then(|| {
                Reply::File(
                    self.configs_dir.join(format!("{name}.toml")),
                    "text/plain; charset=utf-8",
                )
            });
        }
        if let Some(name) = route.strip_prefix("/data/") {
            // The four files by their plain names; gzipped or not, as the directory holds them.
            return crate::data::FILES.contains(&name).then(|| {
                Reply::File(
                    crate::data::locate(&self.data_dir, name),
                    "application/octet-stream",
                )
            });
        }
        None
    }
}

/// What a route answers with: a file, streamed from disk, or a few bytes made here.
enum Reply {
    File(PathBuf, &'static str),
    Bytes(Vec<u8>, &'static str),
}

/// The most connections served at once; one more is answered 503 at once and closed (a
/// client holding hundreds of idle connections then costs others an error, not a hang).
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's head, and how long a connection may stay
/// idle between requests, before it is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a connection may take, however busy: a client that stops reading a response
/// holds its connection (and one chunk of the file) no longer than this.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// The largest request head (request line and headers) read; a longer one is refused.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How much of a file a response holds in memory at once.
const CHUNK_BYTES: usize = 16 * 1024;
/// Threads that read files for responses (tokio's blocking pool): each may keep memory of
/// its own, so they are few.
const FILE_THREADS: usize = 4;

/// A listening server: [`PageServer::url`] to open, [`PageServer::serve`] to answer.
pub struct PageServer {
    listener: std::net::TcpListener,
    site: Site,
}

impl PageServer {
    /// Checks `site` ([`Site::check`]) and listens on `address` (port 0: any free one).
    pub fn bind(address: SocketAddr, site: Site) -> Result<Self, ServeError> {
        site.check()?;
        let listen = |reason| ServeError::Listen {
            address: address.to_string(),
            reason,
        };
        let listener = std::net::TcpListener::bind(address).map_err(listen)?;
        listener.set_nonblocking(true).map_err(listen)?;
        Ok(PageServer { listener, site })
    }

    /// `http://127.0.0.1:PORT/`, with the port actually bound.
    pub fn url(&self) -> String {
        match self.listener.local_addr() {
            Ok(addr) => format!("http://{addr}/"),
            Err(_) => "(unknown address)".into(),
        }
    }

    /// Answers requests until the process ends: each connection a task on a small runtime
    /// (a page fetches its four data files at once), at most [`MAX_CONNECTIONS`] at a time.
    pub fn serve(self) -> Result<(), ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(FILE_THREADS)
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        runtime.block_on(self.accept())
    }

    async fn accept(self) -> Result<(), ServeError> {
        let address = self.url();
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|reason| ServeError::Listen { address, reason })?;
        let site = Arc::new(self.site);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, local) = match listener.accept().await {
                Ok((stream, _)) => match stream.local_addr() {
                    Ok(local) => (stream, local),
                    Err(_) => continue,
                },
                // Out of file descriptors, say: wait for connections to end rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tokio::spawn(refuse_busy(stream));
                continue;
            };
            let site = Arc::clone(&site);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let site = Arc::clone(&site);
                    async move { Ok::<_, Infallible>(answer(&site, local, &request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                drop(slot);
            });
        }
    }
}

/// Answers a connection past [`MAX_CONNECTIONS`] with 503 and closes it: a second at
/// most for a client that does not take the answer.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 36\r\nConnection: close\r\nRetry-After: 10\r\n\r\nbusy: too many connections are open\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(BUSY).await;
        let _ = stream.shutdown().await;
        // Read what the client sent until it closes: closing with its request unread would
        // reset the connection, and the client might lose the answer.
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

type Body = BoxBody<Bytes, std::io::Error>;

/// The response to one request: GET and HEAD of the site's routes, for the address served.
async fn answer<B>(site: &Site, local: SocketAddr, request: &Request<B>) -> Response<Body> {
    if local.ip().is_loopback() && !names_this_server(request, local) {
        // A page on another site that renamed itself to 127.0.0.1 (DNS rebinding) sends its
        // own name: it must not read the data through the user's browser.
        return plain(
            StatusCode::FORBIDDEN,
            "forbidden: the Host header names another server\n",
        );
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let reply = site.route(request.uri().path());
    let (body, kind, length) = match reply {
        None => return plain(StatusCode::NOT_FOUND, "not found\n"),
        Some(Reply::Bytes(bytes, kind)) => {
            let length = bytes.len() as u64;
            (full(bytes), kind, length)
        }
        Some(Reply::File(path, kind)) => match FileBody::open(&path).await {
            Ok(file) => {
                let length = file.remaining;
                (file.boxed(), kind, length)
            }
            Err(_) => return plain(StatusCode::NOT_FOUND, "not found\n"),
        },
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether `request` names the server listening on `local`: one Host header, and the
/// authority of an absolute request target if it has one, each naming its address or
/// `localhost`, with its port (or none, for port 80).
fn names_this_server<B>(request: &Request<B>, local: SocketAddr) -> bool {
    let mut hosts = request.headers().get_all(HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    let target = request.uri().authority().map(|a| a.as_str());
    [host.to_str().ok(), target]
        .into_iter()
        .enumerate()
        .all(|(i, name)| match name {
            Some(name) => names_address(name, local),
            // The Host header must be there; the target's authority only may be.
            None => i == 1,
        })
}

/// Whether `host` (`name[:port]`) is `local`'s address or `localhost` with its port.
fn names_address(host: &str, local: SocketAddr) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, port.parse::<u16>().ok()),
        _ => (host, Some(80)),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let named = name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip == local.ip());
    named && port == Some(local.port())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    response
}

/// A file sent a chunk at a time, as the client reads it: a chunk or two in memory however
/// large the file and however slowly it is read.
struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
}

impl FileBody {
    /// The regular file at `path` (a route names a file; anything else is not served).
    /// Opened without waiting: a FIFO put in a data file's place since the server started
    /// is not a regular file, and must not hold a thread until a writer comes.
    async fn open(path: &Path) -> std::io::Result<Self> {
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        options.custom_flags(libc::O_NONBLOCK);
        let file = options.open(path).await?;
        let metadata = file.metadata().await?;
        if !metadata.is_file() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        Ok(FileBody {
            file,
            remaining: metadata.len(),
        })
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let wanted = CHUNK_BYTES.min(usize::try_from(this.remaining).unwrap_or(usize::MAX));
        let mut chunk = [0u8; CHUNK_BYTES];
        let mut buffer = tokio::io::ReadBuf::new(&mut chunk[..wanted]);
        match Pin::new(&mut this.file).poll_read(cx, &mut buffer) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            // The file shrank since its length was sent: end here, short, rather than pad.
            Poll::Ready(Ok(())) if buffer.filled().is_empty() => {
                Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())))
            }
            Poll::Ready(Ok(())) => {
                let read = buffer.filled();
                this.remaining -= read.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(read)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
