//! The page: the in-memory run it makes and the data it loads, natively against
//! `wgtrain train`; `wgtrain web`'s routes; and the page itself in headless Chromium on its
//! SwiftShader WebGPU adapter, trained and checked against the native CPU path.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{fashion_mnist, gpu, skip, wgtrain, write_dataset, write_idx};
use wgtrain::config::TrainConfig;
use wgtrain::data::{Dataset, FILES, locate};
use wgtrain::device::EngineKind;
use wgtrain::engine::Engine;
use wgtrain::metrics::Summary;
use wgtrain::page::{initial_params, train_in_memory};

/// The four files of `dir` as bytes, in [`FILES`] order.
fn file_bytes(dir: &Path) -> Vec<Vec<u8>> {
    FILES
        .iter()
        .map(|name| std::fs::read(locate(dir, name)).unwrap())
        .collect()
}

fn as_slices(files: &[Vec<u8>]) -> [&[u8]; 4] {
    [&files[0], &files[1], &files[2], &files[3]]
}

#[test]
fn a_dataset_from_bytes_equals_the_one_loaded_from_its_files() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 90, 30, 6, 4, true);
    let files = file_bytes(dir.path());
    let loaded = Dataset::load(dir.path(), 0.2, 5).unwrap();
    let from_bytes = Dataset::from_bytes(as_slices(&files), 0.2, 5).unwrap();
    for (a, b) in [
        (&loaded.train, &from_bytes.train),
        (&loaded.val, &from_bytes.val),
        (&loaded.test, &from_bytes.test),
    ] {
        assert_eq!(
            (&a.pixels, &a.labels, &a.rows),
            (&b.pixels, &b.labels, &b.rows)
        );
    }
    assert_eq!(loaded.image_size, from_bytes.image_size);
    assert_eq!(loaded.classes, from_bytes.classes);
}

#[test]
fn a_page_given_broken_bytes_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 90, 30, 6, 4, false);
    let mut files = file_bytes(dir.path());
    let cut = files[2].len() - 5;
    files[2].truncate(cut);
    let e = Dataset::from_bytes(as_slices(&files), 0.2, 5).unwrap_err();
    assert!(e.to_string().contains("t10k-images-idx3-ubyte"), "{e}");
}

/// A small config on a synthetic 8×8 dataset in `dir`: what the in-memory tests train.
fn small_run(dir: &Path) -> (TrainConfig, Arc<Dataset>) {
    write_dataset(dir, 300, 100, 8, 4, true);
    let text = "layers = [64, 16, 4]\nactivation = \"tanh\"\nlearning_rate = 0.1\nmomentum = true\nepochs = 3\nbatch_size = 32\ninit = \"xavier\"\nseed = 3\n";
    std::fs::write(dir.join("small.toml"), text).unwrap();
    let config = TrainConfig::load(&dir.join("small.toml"), &[]).unwrap();
    let data = Arc::new(Dataset::load(dir, config.val_fraction, config.seed).unwrap());
    (config, data)
}

/// `wgtrain train` of `dir`'s small config on `device`: its summary.
fn trained_by_the_binary(dir: &Path, device: &str) -> Summary {
    let out = dir.join(format!("run-{device}"));
    let o = wgtrain(&[
        "train",
        "--config",
        dir.join("small.toml").to_str().unwrap(),
        "--data",
        dir.to_str().unwrap(),
        "--device",
        device,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    Summary::read(&out.join("summary.json")).unwrap()
}

/// The numbers two summaries of the same training must share (seconds and devices aside).
fn assert_same_training(page: &Summary, native: &Summary) {
    let numbers = |s: &Summary| {
        (
            s.test_accuracy,
            s.test_loss,
            s.best_epoch,
            s.best_val_loss,
            s.epochs_run,
            s.stopped_early,
            s.status.clone(),
        )
    };
    assert_eq!(numbers(page), numbers(native));
}

#[test]
fn an_in_memory_run_on_the_cpu_equals_wgtrain_train() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = small_run(dir.path());
    let params = initial_params(&config, &data).unwrap();
    let mut engine = EngineKind::Cpu { threads: 1 }
        .build(&params, config.batch_size)
        .unwrap();
    engine.upload(Arc::clone(&data)).unwrap();
    let mut epochs = Vec::new();
    let device = ("cpu".to_string(), engine.describe());
    let run = pollster::block_on(train_in_memory(
        engine.as_mut(),
        &config,
        Arc::clone(&data),
        (device, None),
        |r| epochs.push(r.epoch),
    ))
    .unwrap();
    assert_eq!(epochs, [1, 2, 3]);
    assert_same_training(&run.summary, &trained_by_the_binary(dir.path(), "cpu"));
    // The model it hands over is the best epoch's, as model.safetensors holds it.
    let saved = std::fs::read(dir.path().join("run-cpu").join("model.safetensors")).unwrap();
    assert_eq!(run.model_safetensors, saved);
    // metrics.csv as the page offers it: the binary's, seconds aside.
    let without_seconds = |csv: &str| -> Vec<String> {
        csv.lines()
            .map(|l| l.rsplit_once(',').map_or(l, |(rest, _)| rest).to_string())
            .collect()
    };
    let written = std::fs::read_to_string(dir.path().join("run-cpu/metrics.csv")).unwrap();
    assert_eq!(
        without_seconds(&wgtrain::metrics::metrics_csv(&run.records)),
        without_seconds(&written)
    );
    let counted: usize = run.confusion.iter().flatten().sum();
    let correct: usize = (0..4).map(|c| run.confusion[c][c]).sum();
    assert_eq!(counted, data.test.len);
    assert_eq!(correct as f64 / counted as f64, run.summary.test_accuracy);
}

#[test]
fn an_in_memory_run_awaiting_the_gpu_equals_wgtrain_train_on_the_gpu() {
    let Some(ctx) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, data) = small_run(dir.path());
    let params = initial_params(&config, &data).unwrap();
    let adapter = Arc::clone(&ctx.info);
    let mut engine = wgtrain::gpu::GpuEngine::new(ctx, &params, config.batch_size).unwrap();
    engine.upload(Arc::clone(&data)).unwrap();
    // The GpuEngine itself, not `dyn Engine`: the page's path, every read-back awaited.
    let device = ("gpu".to_string(), engine.describe());
    let run = pollster::block_on(train_in_memory(
        &mut engine,
        &config,
        data,
        (device, Some(&adapter)),
        |_| {},
    ))
    .unwrap();
    assert_same_training(&run.summary, &trained_by_the_binary(dir.path(), "gpu"));
    assert_eq!(run.summary.adapter.as_deref(), Some(adapter.name.as_str()));
}

/// `wgtrain web` on any free port, serving `data`: the child and the page's URL.
fn serve(data: &Path) -> (ServerGuard, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
        .args(["web", "--port", "0", "--data", data.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep reading what it prints: a closed pipe would end it at its next line.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let guard = ServerGuard(child);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("wgtrain web printed {line:?}"))
        .to_string();
    (guard, url)
}

/// Kills the server when the test ends, passing or not.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the page is built (web/build.sh); a test that needs it skips or fails without.
fn page_built() -> bool {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/pkg/wgtrain_web_bg.wasm");
    if !pkg.is_file() {
        skip(
            "the page is not built (run web/build.sh)",
            "WGTRAIN_REQUIRE_BROWSER",
        );
        return false;
    }
    true
}

/// GET `path` from the server at `url`: (status line, body).
fn get(url: &str, path: &str) -> (String, Vec<u8>) {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    exchange(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `request` (raw bytes, which should close the connection) to the server at `address`
/// and reads to the end: (first status line, everything after the first head).
fn exchange(address: &str, request: &str) -> (String, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, response[split + 4..].to_vec())
}

/// The resident memory of process `pid`, in MiB (from /proc: Linux).
fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

#[test]
fn wgtrain_web_serves_the_page_configs_and_data_and_nothing_else() {
    if !page_built() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 50, 20, 8, 3, true);
    let (_server, url) = serve(dir.path());
    let (status, body) = get(&url, "/");
    assert!(status.contains("200"), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("id=\"summary\""));
    let (_, names) = get(&url, "/configs/index.json");
    let names: Vec<String> = serde_json::from_slice(&names).unwrap();
    assert!(names.contains(&"momentum".to_string()), "{names:?}");
    let (_, config) = get(&url, "/configs/momentum.toml?x=1");
    let want = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/momentum.toml"));
    assert_eq!(config, want.unwrap());
    // Served as the directory holds it (gzipped here), under its plain name.
    let (_, labels) = get(&url, "/data/train-labels-idx1-ubyte");
    assert_eq!(labels, file_bytes(dir.path())[1]);
    for path in [
        "/../Cargo.toml",
        "/configs/../Cargo.toml",
        "/data/../../Cargo.toml",
        "/data/SHA256SUMS",
        "/src/lib.rs",
    ] {
        let (status, _) = get(&url, path);
        assert!(status.contains("404"), "{path}: {status}");
    }
}

#[test]
fn wgtrain_web_outlasts_clients_that_stall_flood_or_name_another_host() {
    if !page_built() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A 16 MB training-images file: large beside the memory bound below, if it were read whole
    // for each client.
    write_dataset(dir.path(), 20_000, 20, 28, 3, false);
    let (server, url) = serve(dir.path());
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let connect = || {
        let s = std::net::TcpStream::connect(address).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    // 200 connections that send half a request and then nothing.
    let half_open: Vec<_> = (0..200)
        .map(|_| {
            let mut s = connect();
            write!(s, "GET / HTTP/1.1\r\nHost: {address}\r\nUser-Ag").unwrap();
            s
        })
        .collect();
    // 30 clients that ask for the largest file and never read it.
    let not_reading: Vec<_> = (0..30)
        .map(|_| {
            let mut s = connect();
            write!(
                s,
                "GET /data/train-images-idx3-ubyte HTTP/1.1\r\nHost: {address}\r\n\r\n"
            )
            .unwrap();
            s
        })
        .collect();
    // A request line that never ends: refused once it outgrows the bound on a request's head,
    // not read into memory to the end.
    let mut endless = connect();
    endless.write_all(b"GET /").unwrap();
    let mut sent_mib = 0;
    while sent_mib < 200 && endless.write_all(&[b'a'; 1 << 20]).is_ok() {
        sent_mib += 1;
    }
    assert!(sent_mib < 200, "the server read a 200 MiB request line");
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let (status, _) = get(&url, "/configs/index.json");
    assert!(status.contains("200"), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a normal request beside 230 stalled clients took {:?}",
        start.elapsed()
    );
    let resident = resident_mib(server.0.id());
    assert!(resident < 100.0, "the server holds {resident:.0} MiB");
    // A page on another site that renamed itself to 127.0.0.1 sends its own Host.
    for host in [
        "evil.example",
        "evil.example:80",
        "127.0.0.1:1",
        "localhost.evil.example",
    ] {
        let (status, body) = exchange(
            address,
            &format!(
                "GET /data/train-labels-idx1-ubyte HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(status.contains("403"), "Host {host}: {status}");
        assert!(body.len() < 100, "Host {host}: {} bytes", body.len());
    }
    // Two Host headers, the first this server's; an absolute target naming another.
    for request in [
        format!(
            "GET / HTTP/1.1\r\nHost: {address}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET http://evil.example/ HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        ),
    ] {
        let (status, _) = exchange(address, &request);
        assert!(
            status.contains("403") || status.contains("400"),
            "{request:?}: {status}"
        );
    }
    let port = address.rsplit_once(':').unwrap().1;
    let (status, _) = exchange(
        address,
        &format!("GET / HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: Close\r\n\r\n"),
    );
    assert!(status.contains("200"), "{status}");
    // A POST's body is its body, not a second request; HTTP/1.0 ends after one answer.
    let smuggled = format!("GET /configs/index.json HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let (status, rest) = exchange(
        address,
        &format!(
            "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{smuggled}",
            smuggled.len()
        ),
    );
    assert!(status.contains("405"), "{status}");
    assert!(
        !String::from_utf8_lossy(&rest).contains("200 OK"),
        "answered the body as a request"
    );
    let (status, _) = exchange(
        address,
        &format!("GET / HTTP/1.0\r\nHost: {address}\r\n\r\n"),
    );
    assert!(status.contains("200"), "{status}");
    // A data file turned into a FIFO since the server started is not served, and holds
    // nothing up (opened without waiting for a writer).
    #[cfg(unix)]
    {
        let labels = dir.path().join("train-labels-idx1-ubyte");
        std::fs::remove_file(&labels).unwrap();
        let made = Command::new("mkfifo").arg(&labels).status().unwrap();
        assert!(made.success());
        let (status, _) = get(&url, "/data/train-labels-idx1-ubyte");
        assert!(status.contains("404"), "{status}");
    }
    // Past the bound on connections, a client is told at once, not left to hang.
    let full: Vec<_> = (0..wgtrain::serve::MAX_CONNECTIONS)
        .map(|_| connect())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let (status, _) = get(&url, "/");
    assert!(status.contains("503"), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    drop((half_open, not_reading, full));
}

#[test]
fn wgtrain_web_refuses_data_it_cannot_read_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 50, 20, 8, 3, false);
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let o = wgtrain(&["web", "--port", "0", "--data", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    let err = crate::common::stderr(&o);
    assert!(
        err.contains("t10k-labels-idx1-ubyte") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn wgtrain_web_without_a_built_page_says_how_to_build_it() {
    let site = wgtrain::serve::Site {
        web_dir: tempfile::tempdir().unwrap().path().to_path_buf(),
        ..wgtrain::serve::Site::in_source_tree(fashion_mnist())
    };
    let e = wgtrain::serve::PageServer::bind(([127, 0, 0, 1], 0).into(), site)
        .err()
        .expect("an error");
    assert!(e.to_string().contains("run web/build.sh"), "{e}");
}

/// The Chromium to drive: `WGTRAIN_CHROMIUM`, else the first of the usual names on PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WGTRAIN_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// The Chromium to open the page in, when there is one and the page is built; else the test
/// skips (or, under `WGTRAIN_REQUIRE_BROWSER=1`, fails).
fn browser_and_page() -> Option<PathBuf> {
    let Some(browser) = chromium() else {
        skip(
            "no chromium on PATH (apt-get install chromium)",
            "WGTRAIN_REQUIRE_BROWSER",
        );
        return None;
    };
    page_built().then_some(browser)
}

/// Opens `url` in headless Chromium with WebGPU on SwiftShader and returns the JSON of the
/// first console line `wgtrain <word> {…}` (the page's contract), then closes the browser.
fn page_reports(browser: &Path, url: &str, word: &str) -> serde_json::Value {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless=new",
            "--enable-unsafe-webgpu",
            "--use-webgpu-adapter=swiftshader",
            "--enable-unsafe-swiftshader",
            "--no-sandbox", // CI runs as root
            "--enable-logging=stderr",
            "--v=0",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", browser.display()));
    let stderr = child.stderr.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    let marker = format!("\"wgtrain {word} ");
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("CONSOLE") || line.contains("ERROR") {
                kept.lock().unwrap().push(line.clone());
            }
            // Chromium logs `…:INFO:CONSOLE:24] "wgtrain summary {…}", source: … (24)`.
            if let Some(at) = line.find(&marker) {
                let rest = &line[at + marker.len()..];
                let json = rest.rsplit_once("\", source:").map_or(rest, |(j, _)| j);
                let _ = send.send(json.to_string());
                return;
            }
        }
    });
    let limit = Duration::from_secs(300);
    let started = Instant::now();
    let reported = receive.recv_timeout(limit);
    let _ = child.kill();
    let _ = child.wait();
    let json = reported.unwrap_or_else(|_| {
        panic!(
            "the page at {url} logged no `wgtrain {word}` line in {:?}; its console and errors:\n{}",
            started.elapsed(),
            log.lock().unwrap().join("\n")
        )
    });
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// A slice of Fashion-MNIST (its first `train` training and `test` test images), so that a
/// browser epoch on a software adapter takes seconds.
fn fashion_mnist_slice(dir: &Path, train: usize, test: usize) {
    let full = fashion_mnist();
    for (images, labels, n) in [(FILES[0], FILES[1], train), (FILES[2], FILES[3], test)] {
        let raw = wgtrain::data::read_pair(&full, images, labels).unwrap();
        let features = raw.rows * raw.cols;
        write_idx(
            dir,
            images,
            &[n, raw.rows, raw.cols],
            &raw.pixels[..n * features],
            true,
        );
        write_idx(dir, labels, &[n], &raw.labels[..n], true);
    }
}

#[test]
fn the_page_trains_in_chromium_as_the_native_cpu_path_does_and_passes_every_check() {
    let Some(browser) = browser_and_page() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    fashion_mnist_slice(dir.path(), 6000, 1000);
    let (_server, url) = serve(dir.path());

    // One epoch of the paper's [784, 128, 10] momentum network on the browser's adapter, and
    // on the CPU path in the page (wasm, one thread), each against the native CPU path.
    let out = dir.path().join("native");
    let o = wgtrain(&[
        "train",
        "--config",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs/momentum.toml")
            .to_str()
            .unwrap(),
        "--set",
        "epochs=1",
        "--data",
        dir.path().to_str().unwrap(),
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", crate::common::stderr(&o));
    let native = Summary::read(&out.join("summary.json")).unwrap();
    for device in ["gpu", "cpu"] {
        let page = page_reports(
            &browser,
            &format!("{url}?config=momentum&epochs=1&device={device}&autorun=1"),
            "summary",
        );
        assert!(
            page.get("error").is_none(),
            "the page failed on the {device}: {page}"
        );
        let page: Summary = serde_json::from_value(page).unwrap();
        assert_eq!((page.status.as_str(), page.epochs_run), ("finished", 1));
        assert!(
            (page.test_accuracy - native.test_accuracy).abs() <= 0.003,
            "test accuracy {} in the page on the {device}, {} natively",
            page.test_accuracy,
            native.test_accuracy
        );
        let loss_rel = (page.test_loss - native.test_loss).abs() / native.test_loss;
        assert!(
            loss_rel <= 1e-3,
            "test loss {} in the page on the {device}, {} natively",
            page.test_loss,
            native.test_loss
        );
        if device == "gpu" {
            assert_eq!(page.backend.as_deref(), Some("browserwebgpu"), "{page:?}");
            assert!(
                page.device.contains("browserwebgpu"),
                "device names the adapter: {page:?}"
            );
        } else {
            assert_eq!((page.device.as_str(), page.adapter.as_ref()), ("cpu", None));
        }
    }

    // `check` in the page: the native table's rows, every one passing on SwiftShader.
    let check = page_reports(&browser, &format!("{url}?check=1"), "check");
    let rows = check["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{check}"));
    let failed: Vec<_> = rows.iter().filter(|r| r["passed"] != true).collect();
    assert!(failed.is_empty(), "checks failed in the page: {failed:?}");
    let kernels = wgtrain::check::kernels().len();
    // Each kernel's row (matmul has three), then the four whole-epoch rows.
    assert_eq!(rows.len(), kernels + 2 + 4, "{check}");
    assert_eq!(check["passed"], true, "{check}");
}

#[test]
fn the_page_reports_a_config_it_cannot_train_as_an_error() {
    let Some(browser) = browser_and_page() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 60, 20, 8, 3, true);
    // The 8×8 data does not fit the paper's 784 inputs: the library's error, in the element.
    let (_server, url) = serve(dir.path());
    let page = page_reports(
        &browser,
        &format!("{url}?config=momentum&epochs=1&autorun=1"),
        "summary",
    );
    let error = page["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {page}"));
    assert!(error.contains("784") && error.contains("64"), "{error}");
}
