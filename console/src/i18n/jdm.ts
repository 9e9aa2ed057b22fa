// Chinese for the rule editor (@gorules/jdm-editor 1.52.0), which has no translation hook of its own: its labels are
// string literals in its bundle. The build (vite.config.ts `jdmI18n`) rewrites each literal listed here into
// `jdmText("…")`, so the editor speaks the console's language: Chinese by default, English when switched.
// A literal not listed stays English; after upgrading the editor, `npm run build` prints how many still match.
import { LANG_KEY } from './lang';

export const JDM_ZH: Record<string, string> = {
  'Add Condition': '添加条件', 'Add Input': '添加输入', 'Add Output': '添加输出', 'Add item': '添加项', 'Add row': '添加行',
  'Add row above': '在上方插入行', 'Add row below': '在下方插入行', 'Allow custom values': '允许自定义值', 'Boolean': '布尔值',
  'Cancel': '取消', 'Clear': '清空', 'Close': '关闭', 'Close Tabs to the left': '关闭左侧标签页', 'Close Tabs to the right': '关闭右侧标签页',
  'Close all Tabs': '关闭全部标签页', 'Close other Tabs': '关闭其他标签页', 'Close panel': '关闭面板', 'Collect': '全部命中 (Collect)',
  'Components': '组件', 'Configure': '配置', 'Convert': '转换', 'Convert to JSON Schema': '转换为 JSON Schema', 'Copy JSON': '复制 JSON',
  'Copy to clipboard': '复制到剪贴板', 'Currently: Expression. Click for value mode.': '当前：表达式。点击切换为值模式。',
  'Currently: Value. Click for expression mode.': '当前：值。点击切换为表达式模式。', 'DESCRIPTION': '说明', 'Data type': '数据类型',
  'Date': '日期', 'Day': '日', 'Decision Tables': '决策表', 'Decision table': '决策表', 'Decision table columns': '决策表列', 'Delete': '删除',
  'Delete node': '删除节点', 'Description': '说明', 'Deselect': '取消选择', 'Dictionary': '字典', 'Documentation': '文档', 'Done': '完成',
  'Download Excel': '下载 Excel', 'Download JSON': '下载 JSON', 'Duplicate': '复制', 'Edit Expression': '编辑表达式', 'Edit Function': '编辑函数',
  'Edit Table': '编辑表格', 'Edit column': '编辑列', 'Else': '否则', 'Else If': '否则如果', 'Enter field name': '输入字段名', 'Enum': '枚举',
  'Exact': '精确', 'Excel column': 'Excel 列', 'Excel columns': 'Excel 列', 'Execution mode': '执行模式', 'Export Excel': '导出 Excel',
  'Expression': '表达式', 'Expression...': '表达式…', 'Expressions': '表达式', 'Failed to create a node': '无法创建节点', 'Field label': '字段标签',
  'First': '首个命中 (First)', 'Format': '格式化', 'Format code': '格式化代码', 'Function': '函数', 'Functions': '函数',
  'Go to documentation': '查看文档', 'Hit Policy': '命中策略', 'If': '如果', 'Import Excel': '导入 Excel', 'Import from JSON': '从 JSON 导入',
  'Import library': '导入库', 'Inline': '内联', 'Input': '输入', 'Input Field': '输入字段', 'Input field': '输入字段', 'Inputs': '输入',
  'Invalid format': '格式无效', 'Key': '键', 'Label': '标签', 'Learn more': '了解更多', 'Loop': '循环', 'Map Excel data': '映射 Excel 数据',
  'Month': '月', 'Next': '下一个', 'No conditions': '没有条件', 'No input columns': '没有输入列', 'No matches': '没有匹配项',
  'No output columns': '没有输出列', 'None': '无', 'Number': '数字', 'Output': '输出', 'Output Field': '输出字段', 'Output path': '输出路径',
  'Outputs': '输出', 'Passthrough': '透传', 'Previous': '上一个', 'Quarter': '季度', 'Remove': '移除', 'Remove column': '删除列',
  'Remove condition?': '删除条件？', 'Remove row': '删除行', 'Remove row?': '删除这一行？', 'Remove this column?': '删除这一列？',
  'Reorder fields': '调整字段顺序', 'Request': '请求', 'Response': '响应', 'Run': '运行', 'Search components...': '搜索组件…',
  'Search nodes': '搜索节点', 'Search nodes...': '搜索节点…', 'Search...': '搜索…', 'Select Excel column': '选择 Excel 列',
  'Select Excel column for description': '选择作为说明的 Excel 列', 'Select dictionary...': '选择字典…', 'Settings': '设置',
  'Simulation index:': '模拟序号：', 'Single': '单个', 'Switch': '分支', 'Table column': '表格列', 'Text': '文本',
  "This decision model doesn't contain any component.": '这个决策模型还没有任何组件。',
  'Time since start of execution of script.': '自脚本开始执行以来的时间。', 'Type': '类型',
  'Unable to format request, invalid JSON format': '无法格式化请求：JSON 格式无效', 'Update': '更新', 'Upload Excel': '上传 Excel',
  'Upload JSON': '上传 JSON', 'Week': '周', 'Wrap value in quotes': '用引号包裹值', 'Wrap values in quotes': '用引号包裹值', 'Year': '年',
  'Rules spreadsheet': '规则表格', 'Mapping utility': '映射工具', 'Javascript lambda': 'JavaScript 函数', 'Provides input context': '提供输入上下文',
  'Outputs the context': '输出上下文', 'Conditional branching': '条件分支', 'Graph': '流程图', 'Nodes': '节点',
  'Ready to simulate!': '可以开始模拟了！', 'Run a request to see the node trace in action.': '运行一次请求，查看各节点的执行轨迹。',
};

/** The editor's literal in the console's language (read when the editor renders; the rules page remounts it on a switch). */
/** Of those, the ones the editor writes as a bare JSX child (not a prop): only these are rewritten there, since the
 * same bare literals elsewhere are its state values ("Schema", "Console" tabs) and must stay as they are. */
export const JDM_CHILDREN = ['Graph', 'Ready to simulate!', 'Run a request to see the node trace in action.'];

export function jdmText(text: string): string {
  return localStorage.getItem(LANG_KEY) === 'en' ? text : JDM_ZH[text] ?? text;
}
