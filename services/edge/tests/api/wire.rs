//! A bare HTTP/1.1 client for what the JSON helper cannot read: byte bodies
//! (gRPC-Web), chunked bodies read as they arrive (Server-Sent Events).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
};

/// A response head.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response being read: its head, then its body chunk by chunk.
pub(crate) struct Reading {
    pub(crate) head: Head,
    reader: BufReader<TcpStream>,
    chunked: bool,
    length: Option<usize>,
}

/// Sends `method path` with `headers` and `body`, and reads the head.
pub(crate) async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reading {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await.expect("write");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .await
        .expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let head = Head { status, headers };
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = head.header("content-length").and_then(|v| v.parse().ok());
    Reading {
        head,
        reader,
        chunked,
        length,
    }
}

impl Reading {
    /// The next piece of the body (`None` at its end), within `within`.
    pub(crate) async fn next_chunk(&mut self, within: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(within, self.read_chunk())
            .await
            .expect("the next part of the body did not come in time")
    }

    async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        if !self.chunked {
            let mut body = Vec::new();
            match self.length.take() {
                Some(0) => return None,
                Some(n) => {
                    body.resize(n, 0);
                    self.reader.read_exact(&mut body).await.expect("body");
                    self.length = Some(0);
                }
                None => {
                    self.reader.read_to_end(&mut body).await.expect("body");
                    if body.is_empty() {
                        return None;
                    }
                    self.length = Some(0);
                }
            }
            return Some(body);
        }
        let mut size = String::new();
        self.reader.read_line(&mut size).await.expect("chunk size");
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .unwrap_or_else(|_| panic!("not a chunk size: {size:?}"));
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).await.expect("chunk");
        chunk.truncate(size);
        (size > 0).then_some(chunk)
    }

    /// The whole body.
    pub(crate) async fn body(mut self) -> Vec<u8> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk(Duration::from_secs(10)).await {
            body.extend(chunk);
        }
        body
    }
}

/// One Server-Sent Event (a comment line is an event of kind `comment`).
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) kind: String,
    pub(crate) data: String,
}

/// Reads Server-Sent Events off a response.
pub(crate) struct Events {
    reading: Reading,
    buffer: String,
}

impl Events {
    pub(crate) fn new(reading: Reading) -> Self {
        Self {
            reading,
            buffer: String::new(),
        }
    }

    /// The next event or comment, within `within`; `None` when the stream ends.
    pub(crate) async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Event {
                    kind: "message".into(),
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        event.kind = "comment".into();
                        event.data = c.trim().to_owned();
                    } else if let Some(k) = line.strip_prefix("event:") {
                        event.kind = k.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        event.data.push_str(d.trim_start());
                    }
                }
                return Some(event);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let chunk = self.reading.next_chunk(left).await?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event that is not a comment.
    pub(crate) async fn next_event(&mut self, within: Duration) -> Option<Event> {
        loop {
            let e = self.next(within).await?;
            if e.kind != "comment" {
                return Some(e);
            }
        }
    }
}
