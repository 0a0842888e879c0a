"""Where results leave the agent: MQTT and stdout sinks, and the message they carry."""
