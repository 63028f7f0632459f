//! `wgtrain web`: serves the page (`web/index.html`, its script and the wasm that
//! `web/build.sh` makes), the configs and a data directory's four IDX files over plain
//! HTTP/1.1 on a local address. Only those files are reachable: a request names a route, not
//! a path, so nothing else on the machine can be read through it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

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

    /// The body and content type for the request path `route` (its query dropped), or `None`
    /// for a route that is not one of the site's.
    fn respond(&self, route: &str) -> Option<(Vec<u8>, &'static str)> {
        let route = route.split('?').next().unwrap_or_default();
        let file = |path: PathBuf, kind| std::fs::read(path).ok().map(|body| (body, kind));
        if route == "/" {
            return file(self.web_dir.join("index.html"), PAGE_FILES[0].1);
        }
        if let Some((name, kind)) = PAGE_FILES
            .iter()
            .find(|(name, _)| route == format!("/{name}"))
        {
            return file(self.web_dir.join(name), kind);
        }
        if route == "/configs/index.json" {
            let names = serde_json::to_vec(&self.config_names()).ok()?;
            return Some((names, "application/json"));
        }
        if let Some(name) = route
            .strip_prefix("/configs/")
            .and_then(|n| n.strip_suffix(".toml"))
        {
            return self.config_names().iter().any(|n| n == name).then(|| {
                file(
                    self.configs_dir.join(format!("{name}.toml")),
                    "text/plain; charset=utf-8",
                )
            })?;
        }
        if let Some(name) = route.strip_prefix("/data/") {
            // The four files by their plain names; gzipped or not, as the directory holds them.
            return crate::data::FILES.contains(&name).then(|| {
                file(
                    crate::data::locate(&self.data_dir, name),
                    "application/octet-stream",
                )
            })?;
        }
        None
    }
}

/// A listening server: [`PageServer::url`] to open, [`PageServer::serve`] to answer.
pub struct PageServer {
    listener: TcpListener,
    site: Site,
}

impl PageServer {
    /// Checks `site` ([`Site::check`]) and listens on `address` (port 0: any free one).
    pub fn bind(address: SocketAddr, site: Site) -> Result<Self, ServeError> {
        site.check()?;
        let listener = TcpListener::bind(address).map_err(|reason| ServeError::Listen {
            address: address.to_string(),
            reason,
        })?;
        Ok(PageServer { listener, site })
    }

    /// `http://127.0.0.1:PORT/`, with the port actually bound.
    pub fn url(&self) -> String {
        match self.listener.local_addr() {
            Ok(addr) => format!("http://{addr}/"),
            Err(_) => "(unknown address)".into(),
        }
    }

    /// Answers requests until the process ends, each connection on its own thread (a page
    /// fetches its four data files at once).
    pub fn serve(self) -> ! {
        let site = std::sync::Arc::new(self.site);
        loop {
            if let Ok((stream, _)) = self.listener.accept() {
                let site = std::sync::Arc::clone(&site);
                std::thread::spawn(move || {
                    let _ = answer(&site, stream);
                });
            }
        }
    }
}

/// Answers the requests on one connection (GET and HEAD; keep-alive as HTTP/1.1 says).
fn answer(site: &Site, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            close |= header.to_ascii_lowercase().starts_with("connection: close");
        }
        let mut words = request.split_whitespace();
        let (method, route) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or("/"),
        );
        let (status, body, kind) = match (method, site.respond(route)) {
            ("GET" | "HEAD", Some((body, kind))) => ("200 OK", body, kind),
            ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n".to_vec(), "text/plain"),
            _ => (
                "405 Method Not Allowed",
                b"GET only\n".to_vec(),
                "text/plain",
            ),
        };
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\r\n",
            body.len()
        )?;
        if method != "HEAD" {
            out.write_all(&body)?;
        }
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}
