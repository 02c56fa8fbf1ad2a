"""`docktor mcp`: the CLI's operations as a Model Context Protocol server.

An agent (Claude Desktop, cagent, an IDE assistant) reads the loops' status and decisions, takes
a fresh observation, dry-runs the policy and, only when the server was started with
`--allow-control`, pauses, resumes, scales, nudges, approves and rejects. Every tool calls the
code behind the CLI (docktor/client/operate.py, views.py); this package only adapts it to MCP:

  command.py    `docktor mcp` and its options (the SDK is imported only when it runs)
  server.py     the MCPServer, its transports and the per-call context (config, sampler)
  tools.py      the read-only tools and the control tools
  resources.py  docktor://services/{name}/status and .../decisions
  prompt.py     investigate-scaling
"""

from __future__ import annotations
