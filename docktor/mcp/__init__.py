"""`docktor mcp`: the CLI's operations as a Model Context Protocol server.

An agent (Claude Desktop, cagent, an IDE assistant) reads the loops' status and decisions, takes
a fresh observation, dry-runs the policy and, only when the server was started with
`--allow-control`, pauses, resumes, scales, nudges, approves and rejects. Every tool calls the
code behind the CLI (docktor/client/operate.py, views.py); this package only adapts it to MCP:

  server.py     the MCPServer and its transports; imports the three below
  context.py    what they are all handed: the config, the sampler, who acts, error wording
  tools.py      the read-only tools and the control tools
  resources.py  docktor://services/{name}/status and .../decisions
  prompt.py     investigate-scaling

`docktor mcp` and its options are docktor/cli/mcp.py, which imports the SDK only when it runs.
Status is views.StatusView throughout, as `docktor status --json` gives it.
"""

from __future__ import annotations
