//! The Prometheus text format, parsed: enough to assert on series and values.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (`…_bucket`, `…_count` for histograms).
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// The samples in the order they were rendered.
    pub samples: Vec<Sample>,
    /// `# TYPE` lines: metric family → type.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses a `/metrics` body; panics on a malformed line (a test failure).
    pub fn parse(text: &str) -> Self {
        let mut out = Scrape::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    out.types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.samples.push(parse_sample(line));
        }
        out
    }

    /// The sum of every series named `name` whose labels include `labels`
    /// (0 when there is none: a counter not yet incremented).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The samples named `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// Whether any series named `name` has `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("no value in metrics line {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in metrics line {line:?}")),
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
            (name.to_owned(), parse_labels(body, line))
        }
    };
    Sample {
        name,
        labels,
        value,
    }
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        if key.is_empty() {
            break;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "label value not quoted in {line:?}"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_types_parse() {
        let text = "# TYPE rpc_server_requests_total counter\n\
            rpc_server_requests_total{rpc_service=\"a.B\",rpc_method=\"M\",rpc_grpc_status_code=\"OK\"} 3\n\
            rpc_server_requests_total{rpc_service=\"a.B\",rpc_method=\"N\",rpc_grpc_status_code=\"OK\"} 2\n\
            x_bucket{le=\"+Inf\",q=\"a\\\"b\"} 7\n\
            plain 1.5\n";
        let s = Scrape::parse(text);
        assert_eq!(s.types["rpc_server_requests_total"], "counter");
        assert_eq!(
            s.value("rpc_server_requests_total", &[("rpc_method", "M")]),
            3.0
        );
        assert_eq!(s.value("rpc_server_requests_total", &[]), 5.0);
        assert_eq!(s.value("x_bucket", &[("q", "a\"b")]), 7.0);
        assert_eq!(s.value("plain", &[]), 1.5);
        assert_eq!(s.value("missing", &[]), 0.0);
    }
}
