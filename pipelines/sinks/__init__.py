"""Where results leave the agent: MQTT and stdout sinks, and the message they carry.

``registry`` lists the sinks and builds them from the configuration: a new sink is a module here
plus one line in ``registry.SINK_FACTORIES``.
"""
