// Monaco from the app's own assets: @monaco-editor/react fetches it from a CDN unless handed the
// bundled module, and merchants' networks (and CI) have no CDN. Imported by the rules page only.
import * as monaco from 'monaco-editor/esm/vs/editor/editor.api';
// what the JDM function node edits: JavaScript with the TypeScript language service
import 'monaco-editor/esm/vs/basic-languages/javascript/javascript.contribution';
import 'monaco-editor/esm/vs/basic-languages/typescript/typescript.contribution';
import 'monaco-editor/esm/vs/language/typescript/monaco.contribution';
import 'monaco-editor/esm/vs/language/json/monaco.contribution';
import EditorWorker from 'monaco-editor/esm/vs/editor/editor.worker?worker';
import TsWorker from 'monaco-editor/esm/vs/language/typescript/ts.worker?worker';
import JsonWorker from 'monaco-editor/esm/vs/language/json/json.worker?worker';
import { loader } from '@monaco-editor/react';

(self as any).MonacoEnvironment = {
  getWorker(_id: string, label: string) {
    if (label === 'typescript' || label === 'javascript') return new TsWorker();
    if (label === 'json') return new JsonWorker();
    return new EditorWorker();
  },
};
(self as any).monaco = monaco;
loader.config({ monaco });

export default monaco;
