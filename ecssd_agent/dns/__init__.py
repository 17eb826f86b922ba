"""Local DNS for the hosted zone: a server that answers as Route 53 would, and its clients.

- :mod:`.server`: ``ecssd-dns``, an authoritative UDP+TCP server fed from Route 53's API.
- :mod:`.view`: the zone as an immutable view of pre-rendered answers (Route 53's routing
  rules: simple, weighted, multivalue), rebuilt when the listing changes.
- :mod:`.wire`: the few bytes of DNS wire format the hot path reads and writes by hand.
- :mod:`.responder`: one query in, one response out (pure given a view).
- :mod:`.refresh`: keeps the view fresh on an interval and on demand, with a rate cap.
- :mod:`.http_sd`: Prometheus HTTP service discovery (``--http-port``): every instance of
  every SRV record, from the same view.
- :mod:`.client`: what services use: a service name -> ordered ``(target, ip, port)``.
- :mod:`.resolve_cli`: ``ecssd-resolve``, ``dig +short`` for the zone.
"""
