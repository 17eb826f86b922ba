"""The health sweep: delete the records of what is gone or unhealthy, on ECS's evidence.

Observe ECS and EC2 (:mod:`.observe`), judge every owned record set (:mod:`.decide`, pure,
with the task evidence of :mod:`.evidence`), probe what runs (:mod:`.probe`), then act:
delete in batches, StopTask, and in queued mode tell the zone writer (:mod:`.writer_hints`).
:mod:`.runner` wires one sweep; :mod:`.settings` are the Lambda's settings.
"""
