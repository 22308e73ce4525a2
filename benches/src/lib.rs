//! What the bench programs share: process figures from /proc and percentiles.

/// User + system CPU seconds of process `pid` and its resident memory in KiB as the
/// `/proc/<pid>/status` field `rss_field` has it (`VmRSS:` for all of it, `RssAnon:` for the
/// anonymous part).
pub fn proc_stats(pid: u32, rss_field: &str) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with(rss_field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    Some(((utime + stime) / ticks, rss_kb))
}

/// A minimal HTTP/1.1 client over one keep-alive connection: one write per request,
/// reads by Content-Length. A general client (ureq, serde_json trees) spends several
/// times the server's CPU per request building and parsing; on a 2-core machine shared
/// with the server, that, not the server, would set the rate.
pub struct RawConnection {
    stream: std::net::TcpStream,
    host: String,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl RawConnection {
    /// Connects to `http://host:port`.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let host = url
            .strip_prefix("http://")
            .context("the raw client speaks plain http:// only")?
            .trim_end_matches('/')
            .to_owned();
        let stream = std::net::TcpStream::connect(&host)?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host,
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(256),
        })
    }

    /// `GET path`: the status and the body.
    pub fn get(&mut self, path: &str) -> anyhow::Result<(u16, &[u8])> {
        self.send("GET", path, None)
    }

    /// `POST path` with a body of `content_type`: the status and the answer's body.
    pub fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, &[u8])> {
        self.send("POST", path, Some((content_type, body)))
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> anyhow::Result<(u16, &[u8])> {
        use anyhow::{Context, bail};
        use std::io::{Read, Write};
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.host
        )?;
        if let Some((content_type, body)) = body {
            write!(
                self.request,
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            self.request.extend_from_slice(body);
        } else {
            self.request.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&self.request)?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let header_end = loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = std::str::from_utf8(&self.buf[..header_end])?;
        let status: u16 = head
            .get(9..12)
            .context("no status line")?
            .parse()
            .context("bad status")?;
        let length: usize = head
            .split("\r\n")
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while self.buf.len() < header_end + length {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the server closed the connection mid-body");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, &self.buf[header_end..header_end + length]))
    }
}

/// The `p` quantile (0–1) of `sorted`, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 0.5), 3.0);
        assert_eq!(percentile(&sorted, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn own_process_has_cpu_and_memory() {
        let (cpu, rss) = proc_stats(std::process::id(), "VmRSS:").unwrap();
        assert!(cpu >= 0.0);
        assert!(rss > 0);
        assert!(proc_stats(std::process::id(), "NoSuchField:").is_none());
    }
}
