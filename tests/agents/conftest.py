import re

import pytest

from tests.agents.scripted_llm import ScriptedLLM

CITATION = re.compile(r"\[\[(\d+)\]\]")


def llm_script(plan_reply: str):
    """Replies by the kind of request: plan, follow-up, query rewrite, node answer, final response."""

    def script(messages):
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        if "You plan" in system:
            if "answers found so far" in user:
                return '{"nodes": [], "edges": []}'
            return plan_reply
        if "search queries" in system:
            return '["yeast dough rises", "bread fermentation"]' if "bread" in user.split("Sub-question:")[-1] else '["moon tides sea"]'
        if "numbered passages" in system:
            return "It rises because yeast releases gas [[1]], see also [[9]]."  # [[9]] names no passage
        if "final answer" in user:
            return "Yeast makes bread rise [[1]] and the moon raises tides [[2]]; unknown [[77]]."
        return 400

    return script


@pytest.fixture()
def scripted_llm():
    def start(plan_reply: str) -> ScriptedLLM:
        return ScriptedLLM(llm_script(plan_reply))

    return start
