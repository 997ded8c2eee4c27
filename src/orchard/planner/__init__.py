"""`orchard draft`: a configured agent, held to reading in a scratch worktree, writes a plan for a goal; orchard
checks each draft with the normal plan loader, sends the problems back, and writes the plan only once it is valid.
Nothing of the plan runs.

    config = read_agents_config(agents_file(None, repo.root))
    result = draft(DraftRequest(goal, repo, config, choose_planner(config, None), Path("plan.yaml")))

`planner.prompt` holds the pure text (the prompt, the feedback, reading the YAML block back), `planner.check` one
draft's check, `planner.agent` one planner turn, `planner.session` the rounds. docs/draft.md has the rules.
"""

from orchard.errors import DraftFailed
from orchard.planner.config import AgentsConfig, agents_file, choose_planner, read_agents_config, read_only
from orchard.planner.session import DraftRequest, DraftResult, draft

__all__ = ["AgentsConfig", "DraftFailed", "DraftRequest", "DraftResult", "agents_file", "choose_planner", "draft",
           "read_agents_config", "read_only"]
