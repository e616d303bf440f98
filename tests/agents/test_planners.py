from foveal.agents.graph import NodeState, Reference, SearchGraph
from foveal.agents.planners import RulePlanner, bridge_entity


def contents(question):
    return [n.content for n in RulePlanner().plan(question).nodes]


class TestRulePlanner:
    def test_compound_questions_split_into_clauses(self):
        assert contents("How does yeast make bread rise, and what causes ocean tides?") == [
            "How does yeast make bread rise?", "what causes ocean tides?"]
        assert contents("Who wrote Dune? When was it published?") == ["Who wrote Dune?", "When was it published?"]

    def test_comparative_questions_split_per_entity(self):
        assert contents("Which is older, the Eiffel Tower or the Statue of Liberty?") == [
            "Which is older, the Eiffel Tower?", "Which is older, the Statue of Liberty?"]

    def test_multi_entity_questions_split_with_a_cue(self):
        assert contents("Were Scott Derrickson and Ed Wood of the same nationality?") == [
            "Were Scott Derrickson of the same nationality?", "Were Ed Wood of the same nationality?"]

    def test_a_title_with_and_is_not_split_without_a_cue(self):
        question = "What government position was held by the woman who portrayed Corliss Archer in Kiss and Tell?"
        assert contents(question) == [question]

    def test_follows_the_bridge_entity_of_the_first_answer(self):
        question = "Which city is the director of the film Big Stone Gap based in?"
        graph = SearchGraph(question)
        node = graph.add_node("q1", question)
        graph.add_edge("root", "q1")
        node.state = NodeState.done
        node.answer = "Big Stone Gap is a 2014 film written and directed by Adriana Trigiani. [[1]]"
        node.references = [Reference(1, "d1", "Big Stone Gap (film)", "...", 1.0)]
        plan = RulePlanner().follow_up(graph)
        assert [(n.name, n.content, n.focus) for n in plan.nodes] == [
            ("bridge", f"Adriana Trigiani: {question}", "Adriana Trigiani")]
        assert plan.edges == [("q1", "bridge")]
        node_two = graph.add_node("bridge", "x")  # one follow-up only
        node_two.state = NodeState.done
        assert RulePlanner().follow_up(graph) is None

    def test_bridge_prefers_a_name_that_titles_a_retrieved_document(self):
        answer = "The Kiss was painted by Gustav Klimt in Vienna. [[1]]"
        assert bridge_entity("Who painted The Kiss?", answer, [], ["Vienna (city)"]) == "Vienna"
        assert bridge_entity("Who painted The Kiss?", answer, [], []) == "Gustav Klimt"


def test_bridge_links_a_retrieved_title_named_in_a_cited_passage():
    from foveal.agents.planners import linked_title

    question = "The Vermont Catamounts soccer team competes in a conference formerly known as what?"
    refs = [Reference(1, "d1", "Vermont Catamounts soccer", "The team plays in the America East Conference.", 1.0)]
    retrieved = ["Vermont Catamounts soccer", "Vermont Catamounts basketball", "America East Conference"]
    assert linked_title(question, refs, retrieved) == "America East Conference"
    # nothing named in the passages: a retrieved, uncited title the question names
    refs = [Reference(1, "d1", "Big Stone Gap (film)", "A 2014 film.", 1.0)]
    assert linked_title("Who directed Big Stone Gap in Virginia?", refs, ["Virginia (state)", "Ohio"]) == "Virginia"
    assert linked_title("Who directed Big Stone Gap?", refs, ["Ohio"]) is None
