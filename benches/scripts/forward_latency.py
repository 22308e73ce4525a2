#!/usr/bin/env python3
"""The forwarding hop, idle: p50/p99 of 300 sequential requests on one keep-alive connection,
to a holder and through a standby, three rounds. Run it in a directory holding `h.addr` and
`s.addr` (the holder's and the standby's `--port-file`), both servers on one topic with a
meter `calls` (benches/README.md, "Ingest through a standby"). It ingests 2,000 events first.
"""
import http.client, json, time
def run(addr, path, n=300):
    host, port = addr.split(':')
    c = http.client.HTTPConnection(host, int(port))
    ts = []
    for _ in range(n):
        t = time.perf_counter(); c.request('GET', path); r = c.getresponse(); r.read(); ts.append((time.perf_counter()-t)*1000)
        assert r.status == 200, r.status
    ts.sort(); return ts[len(ts)//2], ts[int(len(ts)*0.99)]
h = open('h.addr').read(); s = open('s.addr').read()
# some events first
hh, hp = h.split(':')
c = http.client.HTTPConnection(hh, int(hp))
ev = [{"specversion":"1.0","id":f"e{i}","source":"fw","type":"call","subject":f"s{i%10}","time":"2026-12-07T08:00:00Z","data":{}} for i in range(2000)]
c.request('POST','/api/v1/events', json.dumps(ev), {'content-type':'application/cloudevents-batch+json'}); print('ingest', c.getresponse().status)
time.sleep(2)
for rnd in range(3):
    for name, addr in (('holder', h), ('standby', s)):
        for path in ('/api/v1/meters/calls/query', '/api/v1/meters'):
            p50, p99 = run(addr, path)
            print(f"round {rnd} {name:8} {path:30} p50 {p50:.2f} ms p99 {p99:.2f} ms")
