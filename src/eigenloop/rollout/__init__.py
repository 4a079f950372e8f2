"""Episodes: an agent, the simulated user and the environment, driven turn by turn."""
