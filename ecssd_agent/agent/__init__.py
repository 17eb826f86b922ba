"""The per-host agent (``ecssd-agent``): Docker in, this host's records out.

Wiring (:mod:`.cli`, :mod:`.settings`), the host's agent (:mod:`.host_agent`), the daemon's event
loop (:mod:`.daemon`) and what it observes: Docker (:mod:`.docker_events`,
:mod:`.docker_source`), the ECS agent and the container instance's status
(:mod:`.ecs_introspection`, :mod:`.drain`); its status endpoint (:mod:`.status`).
"""
