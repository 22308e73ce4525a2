//! Signing against the Standard Webhooks published vector, secrets, headers and one real POST.

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

#[test]
fn signature_matches_the_standard_webhooks_example_vector() {
    // The example of the Standard Webhooks spec and Svix's libraries.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"test": 2432232314}"#;
    let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert_eq!(
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
        Ok(expected.to_owned())
    );
    // The prefix is optional; a changed byte anywhere changes the signature.
    assert_eq!(
        sign(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body
        ),
        Ok(expected.to_owned())
    );
    assert_ne!(
        sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body),
        Ok(expected.to_owned())
    );
}

#[test]
fn secrets_are_checked_and_generated_within_bounds() {
    let cases: &[(&str, Result<usize, SecretError>)] = &[
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Ok(24)),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Ok(24)),
        ("whsec_not base64!", Err(SecretError::NotBase64)),
        ("whsec_c2hvcnQ=", Err(SecretError::Length { bytes: 5 })),
    ];
    for (secret, expected) in cases {
        assert_eq!(
            secret_key(secret).map(|k| k.len()),
            *expected,
            "secret {secret}"
        );
    }
    let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
    assert_eq!(secret_key(&long), Err(SecretError::Length { bytes: 65 }));
    let generated = generate_secret();
    assert!(generated.starts_with(SECRET_PREFIX));
    assert_eq!(secret_key(&generated).map(|k| k.len()), Ok(32));
    assert_ne!(generated, generate_secret());
}

#[test]
fn headers_carry_both_families_and_custom_headers_cannot_override_them() {
    let delivery = Delivery {
        url: "http://127.0.0.1:1/".into(),
        message_id: "01J2KNP1YTXQRXHTDJ4KPR7PZ0".into(),
        timestamp: 1614265330,
        body: b"{}".to_vec(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        custom_headers: vec![
            ("X-Tenant".into(), "acme".into()),
            ("Svix-Signature".into(), "forged".into()),
        ],
        timeout: Duration::from_secs(5),
    };
    let headers = headers(&delivery).expect("valid secret");
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let signature = sign(&delivery.secret, &delivery.message_id, 1614265330, b"{}").expect("sign");
    assert_eq!(get("x-tenant"), vec!["acme"]);
    assert_eq!(get("svix-signature"), vec![signature.as_str()]);
    assert_eq!(get("webhook-signature"), vec![signature.as_str()]);
    assert_eq!(get("webhook-id"), vec!["01J2KNP1YTXQRXHTDJ4KPR7PZ0"]);
    assert_eq!(get("svix-timestamp"), vec!["1614265330"]);
    assert_eq!(get("content-type"), vec!["application/json"]);
}

/// Serves one request with `status`, and hands back the request's head and body.
fn serve_once(status: u16) -> (String, std::thread::JoinHandle<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        )
        .expect("write");
        (head, String::from_utf8_lossy(&body).into_owned())
    });
    (url, handle)
}

#[test]
fn send_posts_once_and_reports_the_status() {
    for (status, success) in [(204, true), (500, false)] {
        let (url, server) = serve_once(status);
        let delivery = Delivery {
            url,
            message_id: "m1".into(),
            timestamp: 1,
            body: br#"{"a":1}"#.to_vec(),
            secret: generate_secret(),
            custom_headers: Vec::new(),
            timeout: Duration::from_secs(10),
        };
        let outcome = send(&delivery);
        let (head, body) = server.join().expect("server");
        assert_eq!(outcome.status, Some(status));
        assert_eq!(outcome.is_success(), success);
        assert_eq!(body, r#"{"a":1}"#);
        let expected = sign(&delivery.secret, "m1", 1, br#"{"a":1}"#).expect("sign");
        assert!(
            head.to_ascii_lowercase().contains(&format!(
                "webhook-signature: {}",
                expected.to_ascii_lowercase()
            )),
            "{head}"
        );
    }
}

#[test]
fn an_unreachable_receiver_is_an_outcome_without_status() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    drop(listener);
    let outcome = send(&Delivery {
        url,
        message_id: "m".into(),
        timestamp: 1,
        body: Vec::new(),
        secret: generate_secret(),
        custom_headers: Vec::new(),
        timeout: Duration::from_secs(5),
    });
    assert_eq!(outcome.status, None);
    assert!(!outcome.is_success());
    assert!(!outcome.body.is_empty());
}
