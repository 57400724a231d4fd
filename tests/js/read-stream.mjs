// Reads the function's live stream with the AI SDK's own client code: the transport useChat
// uses (DefaultChatTransport) and its UI message stream reader. Two versions: the current one
// and a 5.0 release that rejects any chunk with an unknown key.
// Usage: node read-stream.mjs <ai|ai-v5> <url> <json request options>
// (options.resume: a resume URL to reconnect to instead of sending a message)
// Prints one JSON line per message state, then {"done": true} or {"error": "..."}.
const [pkg, url, optionsJson] = process.argv.slice(2);
const { DefaultChatTransport, readUIMessageStream } = await import(pkg);
const options = JSON.parse(optionsJson);

const transport = new DefaultChatTransport({
  api: url,
  body: { sessionId: options.sessionId, stepId: options.stepId },
  headers: options.headers ?? {},
});
const errors = [];
try {
  // With `resume`, reconnect the way useChat({resume: true}) does after a reload.
  const stream = options.resume
    ? await new DefaultChatTransport({
        api: 'unused',
        prepareReconnectToStreamRequest: () => ({
          api: options.resume,
          headers: options.headers ?? {},
        }),
      }).reconnectToStream({ chatId: options.chatId ?? 'chat-1' })
    : await transport.sendMessages({
        chatId: options.chatId ?? 'chat-1',
        trigger: options.trigger ?? 'submit-message',
        messageId: options.messageId,
        messages: options.messages,
        abortSignal: undefined,
      });
  if (stream === null) {
    console.log(JSON.stringify({ nothing: true }));
    process.exit(0);
  }
  for await (const message of readUIMessageStream({
    stream,
    terminateOnError: true,
    onError: (error) => errors.push(String(error?.message ?? error)),
  })) {
    console.log(JSON.stringify(message));
  }
  console.log(JSON.stringify(errors.length ? { error: errors.join('; ') } : { done: true }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.message ?? error) }));
}
