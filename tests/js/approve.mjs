// Runs the approval flow with the AI SDK's own chat, as useChat runs it: AbstractChat with
// DefaultChatTransport and sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses.
// The stand-in adds an item, then asks to remove it; the team answers with
// addToolApprovalResponse and the chat sends the answer by itself.
// Usage: node approve.mjs <url> <json {sessionId, stepId, approved, reason}>
// Prints one JSON line per stage ({stage, messages, status, error}).
import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
} from 'ai';

const [url, optionsJson] = process.argv.slice(2);
const options = JSON.parse(optionsJson);

class State {
  status = 'ready';
  error = undefined;
  messages = [];
  pushMessage(message) {
    this.messages = [...this.messages, message];
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = this.messages.map((m, i) => (i === index ? message : m));
  }
  snapshot(thing) {
    return structuredClone(thing);
  }
}

class Chat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new State() });
  }
}

const chat = new Chat({
  id: 'chat-1',
  transport: new DefaultChatTransport({
    api: url,
    body: { sessionId: options.sessionId, stepId: options.stepId },
  }),
  sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
});

function report(stage) {
  const error = chat.error ? String(chat.error.message ?? chat.error) : undefined;
  console.log(JSON.stringify({ stage, status: chat.status, error, messages: chat.messages }));
}

async function settled(predicate) {
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    if (chat.status === 'error' || (chat.status === 'ready' && predicate())) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out in status ${chat.status}`);
}

await chat.sendMessage({ text: 'Pagers [[standin tool=add_board_items]]' });
const added = chat.messages.at(-1).parts.find((p) => p.type === 'tool-add_board_items');
report('added');
const itemId = added.output.ids[0];
await chat.sendMessage({ text: `Drop it [[standin tool=remove_board_item item=${itemId}]]` });
const asked = chat.messages.at(-1).parts.find((p) => p.state === 'approval-requested');
report('asked');
await chat.addToolApprovalResponse({
  id: asked.approval.id,
  approved: options.approved,
  reason: options.reason,
});
await settled(() =>
  chat.messages.at(-1).parts.every((p) => p.state !== 'approval-responded'),
);
report('answered');
