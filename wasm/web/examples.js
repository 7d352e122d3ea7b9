// Examples a person can add to the tab with one click (page.js shows a button for each).
//
// Each example is what edgeMin.addAgent / addWorkflow take: agents (YAML and the files a
// python agent's module needs), one workflow, and an input to start from. Only what runs in
// a tab is here: built-in agents and python agents (a tab cannot start command agents).

const HELLO_WORKFLOW = `\
name: hello
version: 1.0.0
description: Two built-in echo steps; the second runs after the first.
steps:
  - id: greet
    agent: echo
    input: "\${input}"
  - id: reply
    agent: echo
    needs: [greet]
    input: {hello: "\${steps.greet.output.input.name}"}
`;

const WORDS_AGENT = `\
name: word-stats
version: 1.0.0
type: edge
runtime:
  executor: python
  entry: word_stats:run
input: {format: json}
output: {format: json}
`;

const WORDS_MODULE = `\
def run(value, context):
    text = value.get("text", "") if isinstance(value, dict) else str(value)
    words = text.split()
    longest = max(words, key=len) if words else ""
    return {"words": len(words), "chars": len(text), "longest": longest}
`;

const WORDS_WORKFLOW = `\
name: word-stats
version: 1.0.0
description: A python agent counts the words of input.text; echo passes the count on.
steps:
  - id: stats
    agent: word-stats
    input: "\${input}"
  - id: report
    agent: echo
    needs: [stats]
    input: {words: "\${steps.stats.output.words}", longest: "\${steps.stats.output.longest}"}
`;

export const EXAMPLES = [
  {
    key: "hello",
    title: "hello (built-in echo agents)",
    workflow: HELLO_WORKFLOW,
    agents: [],
    input: { name: "world" },
  },
  {
    key: "word-stats",
    title: "word-stats (a python agent)",
    workflow: WORDS_WORKFLOW,
    agents: [{ yaml: WORDS_AGENT, files: { "word_stats.py": WORDS_MODULE } }],
    input: { text: "the app keeps crashing when I open settings" },
  },
  {
    // The spec's examples/workflows/feedback-triage.yaml with text-classifier-lite (the
    // shipped int8 model on onnxruntime-web) and the tab's Python notify: the bundle carries
    // them (examples/ and models/ in dist/web, edgeMin.addExamples()).
    key: "feedback-triage",
    title: "feedback-triage (ONNX text classifier)",
    bundled: true,
    workflow: null,
    agents: [],
    input: { text: "the app keeps crashing" },
  },
];
