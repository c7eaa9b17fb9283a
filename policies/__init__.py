"""The CrossGuard policy pack of the DICT Redis cache layer.

``__main__.py`` only builds the :class:`pulumi_policy.PolicyPack` (its constructor starts the gRPC
server the Pulumi engine talks to, and never returns); the rules live in modules grouped by
concern so tests and ``make policy`` can import them without starting anything:

    kubernetes.py    container, pod and namespace rules on Kubernetes objects
    redis.py         stack-level rules on the Redis and Sentinel topology, auth and TLS
    state_tier.py    the state tier never evicts: it exists, runs noeviction + AOF, has its own master name
    aws.py           S3 backup bucket, IAM and AWS credential rules
    workloads.py     reading pod specs, labels and selectors out of Kubernetes objects
    config_text.py   finding Redis/Sentinel settings in rendered configs, scripts and command lines
    pack_config.py   per-policy configuration with defaults, and resource labels for messages
    pack.py          the pack's name and the list of every policy
    analyze.py       ``make policy``: the real program under mocks, fed to the pack's analyzer

The pack imports nothing from the Pulumi program (``components/``): the engine runs it in its own
virtualenv from this directory, so it must stand alone. Facts it shares with the program (labels,
container names) are pack config defaults, and a test keeps them equal to ``components.topology``.
"""
