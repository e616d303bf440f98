import pytest

from foveal.agents.graph import NodeState, SearchGraph
from foveal.agents.plan import PlanError, apply_plan, parse_plan


class TestSearchGraph:
    def test_ready_follows_edges_and_states(self):
        graph = SearchGraph("q")
        graph.add_node("a", "first?")
        graph.add_node("b", "second?")
        graph.add_edge("root", "a")
        graph.add_edge("a", "b")
        assert [n.name for n in graph.ready()] == ["a"]
        graph.nodes["a"].state = NodeState.failed  # a failed parent still lets the child run (partial answers)
        assert [n.name for n in graph.ready()] == ["b"]

    def test_cycles_and_unknown_nodes_are_refused(self):
        graph = SearchGraph("q")
        graph.add_node("a", "x")
        graph.add_node("b", "y")
        graph.add_edge("a", "b")
        with pytest.raises(ValueError, match="cycle"):
            graph.add_edge("b", "a")
        with pytest.raises(ValueError, match="unknown node 'c'"):
            graph.add_edge("a", "c")
        with pytest.raises(ValueError, match="nothing points at root"):
            graph.add_edge("a", "root")

    def test_response_closes_every_leaf(self):
        graph = SearchGraph("q")
        for name in ("a", "b", "c"):
            graph.add_node(name, name)
        graph.add_edge("a", "c")
        graph.add_response()
        assert sorted(graph.parents("response")) == ["b", "c"]


class TestPlan:
    def test_fenced_json_is_parsed_and_applied(self):
        plan = parse_plan('Sure!\n```json\n{"nodes": [{"name": "a", "content": "A?"}, {"name": "b", "content": "B?"}],'
                          ' "edges": [["a", "b"]]}\n```')
        graph = SearchGraph("q")
        assert apply_plan(graph, plan) == ["a", "b"]
        assert graph.parents("a") == ["root"] and graph.parents("b") == ["a"]

    @pytest.mark.parametrize(
        "reply, fragment",
        [
            ("import os; os.system('rm -rf /')", "not JSON"),
            ('{"nodes": "everything"}', "nodes"),
            ('{"nodes": [{"name": "root", "content": "x"}]}', "reserved"),
            ('{"nodes": [{"name": "a", "content": "x"}, {"name": "a", "content": "y"}]}', "repeat"),
            ('{"nodes": [{"name": "bad name!", "content": "x"}]}', "name"),
            ('{"nodes": [{"name": "a", "content": ""}]}', "content"),
            ('{"nodes": [], "code": "graph.add_node()"}', "code"),
        ],
    )
    def test_invalid_plans_say_why(self, reply, fragment):
        with pytest.raises(PlanError, match=fragment):
            parse_plan(reply)

    def test_apply_refuses_cycles_and_unknown_edges_without_changing_the_graph(self):
        graph = SearchGraph("q")
        cyclic = parse_plan('{"nodes": [{"name": "a", "content": "x"}, {"name": "b", "content": "y"}],'
                            ' "edges": [["a", "b"], ["b", "a"]]}')
        with pytest.raises(PlanError, match="cycle"):
            apply_plan(graph, cyclic)
        dangling = parse_plan('{"nodes": [{"name": "a", "content": "x"}], "edges": [["ghost", "a"]]}')
        with pytest.raises(PlanError, match="unknown node 'ghost'"):
            apply_plan(graph, dangling)
        assert list(graph.nodes) == ["root"] and graph.edges == []
